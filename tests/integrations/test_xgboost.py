"""MarkovXGBoostCallback against real XGBoost: a few shallow trees on synthetic regression data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
xgb = pytest.importorskip("xgboost")

import otlp_files  # noqa: E402
from recorded import only_run, series, steps  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.xgboost import MarkovXGBoostCallback  # noqa: E402

ROUNDS = 5
PARAMS = {"objective": "reg:squarederror", "max_depth": 2, "eval_metric": ["rmse", "mae"]}


def data() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=64)
    return xgb.DMatrix(x[:48], y[:48]), xgb.DMatrix(x[48:], y[48:])


def offline_callback(**kwargs: Any) -> MarkovXGBoostCallback:
    return MarkovXGBoostCallback(name="tiny-xgb", recording_mode=RecordingMode.OFFLINE, **kwargs)


def test_train_records_each_metric_of_each_eval_set_per_round(isolated: Path) -> None:
    """4 series (train/valid x rmse/mae), 5 rounds each at steps 0..4, XGBoost's own values."""
    train, valid = data()
    evals_result: dict[str, Any] = {}
    xgb.train(
        {**PARAMS, "nthread": 1}, train, num_boost_round=ROUNDS,
        evals=[(train, "train"), (valid, "valid")], evals_result=evals_result,
        callbacks=[offline_callback(hyper_parameters=PARAMS)], verbose_eval=False,
    )  # fmt: skip
    run = only_run(isolated)
    expected = {
        f"{data_name}/{metric}": list(enumerate(history))
        for data_name, metrics in evals_result.items()
        for metric, history in metrics.items()
    }
    assert sorted(expected) == ["train/mae", "train/rmse", "valid/mae", "valid/rmse"]
    assert series(run) == expected
    info = otlp_files.recording(run)
    assert info["status"] == "finished"
    assert info["hyper_parameters"]["eval_metric"] == ["rmse", "mae"]


def test_early_stopping_puts_the_best_round_in_the_summary(isolated: Path) -> None:
    """With early stopping: one point per round run, best_iteration/best_score in the summary."""
    train, valid = data()
    booster = xgb.train(
        {**PARAMS, "nthread": 1, "eta": 1.0, "max_depth": 6}, train, num_boost_round=200,
        evals=[(valid, "valid")], early_stopping_rounds=2, callbacks=[offline_callback()],
        verbose_eval=False,
    )  # fmt: skip
    run = only_run(isolated)
    rounds = booster.num_boosted_rounds()
    assert rounds < 200
    assert steps(run, "valid/mae") == list(range(rounds))
    summary = otlp_files.recording(run)["summary"]
    assert summary == {"best_iteration": booster.best_iteration, "best_score": booster.best_score}


def test_cv_records_the_mean_and_the_std_over_folds(isolated: Path) -> None:
    """xgb.cv: <data>/<metric> is the mean, <data>/<metric>_std the spread, as cv returns them."""
    train, _ = data()
    table = xgb.cv(
        {**PARAMS, "nthread": 1}, train, num_boost_round=3, nfold=2, seed=0,
        callbacks=[offline_callback()],
    )  # fmt: skip
    recorded = series(only_run(isolated))
    assert [v for _, v in recorded["test/rmse"]] == pytest.approx(list(table["test-rmse-mean"]))
    assert [v for _, v in recorded["test/rmse_std"]] == pytest.approx(list(table["test-rmse-std"]))
    assert [s for s, _ in recorded["train/mae"]] == [0, 1, 2]


def test_continued_training_continues_the_steps_in_a_given_recorder(isolated: Path) -> None:
    """Training on from a booster (xgb_model=) into the user's recorder: steps 0..4, then 5..7."""
    train, valid = data()
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    callback = MarkovXGBoostCallback(recorder)
    options: dict[str, Any] = {"evals": [(valid, "valid")], "verbose_eval": False}
    with recorder:
        booster = xgb.train(PARAMS, train, ROUNDS, callbacks=[callback], **options)
        xgb.train(PARAMS, train, 3, xgb_model=booster, callbacks=[callback], **options)
        recorder.add_record({"after": 1.0})  # after_training left it running
    run = only_run(isolated)
    assert steps(run, "valid/rmse") == list(range(ROUNDS + 3))
    assert series(run)["after"] == [(ROUNDS + 3, 1.0)]


def test_the_scikit_learn_api_records_each_eval_set(isolated: Path) -> None:
    """XGBRegressor(callbacks=[...]).fit(eval_set=...): validation_0/rmse per round, 0..2."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)), rng.normal(size=32)
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1, callbacks=[offline_callback()])
    model.fit(x, y, eval_set=[(x, y)], verbose=False)
    run = only_run(isolated)
    assert steps(run, "validation_0/rmse") == [0, 1, 2]
    expected = model.evals_result()["validation_0"]["rmse"]
    assert [v for _, v in series(run)["validation_0/rmse"]] == expected
