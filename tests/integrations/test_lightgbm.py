"""MarkovLightGBMCallback against real LightGBM: a few small trees on synthetic regression data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
lgb = pytest.importorskip("lightgbm")

import otlp_files  # noqa: E402
from recorded import only_run, series, steps  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.lightgbm import MarkovLightGBMCallback  # noqa: E402

ROUNDS = 5
PARAMS: dict[str, Any] = {
    "objective": "regression", "metric": ["l2", "l1"], "num_leaves": 4, "min_data_in_leaf": 2,
    "verbose": -1, "num_threads": 1, "seed": 0,
}  # fmt: skip


def datasets() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=64)
    train = lgb.Dataset(x[:48], y[:48])
    return train, lgb.Dataset(x[48:], y[48:], reference=train)


def offline_callback(**kwargs: Any) -> MarkovLightGBMCallback:
    return MarkovLightGBMCallback(name="tiny-lgbm", recording_mode=RecordingMode.OFFLINE, **kwargs)


def test_train_records_each_evaluation_result_per_iteration(isolated: Path) -> None:
    """4 series (train/valid x l2/l1), 5 iterations each at steps 0..4, LightGBM's own values."""
    train, valid = datasets()
    evals: dict[str, Any] = {}
    lgb.train(
        PARAMS, train, num_boost_round=ROUNDS, valid_sets=[train, valid],
        valid_names=["train", "valid"],
        callbacks=[offline_callback(hyper_parameters=PARAMS), lgb.record_evaluation(evals)],
    )  # fmt: skip
    run = only_run(isolated)
    expected = {
        f"{name}/{metric}": list(enumerate(history))
        for name, metrics in evals.items()
        for metric, history in metrics.items()
    }
    assert sorted(expected) == ["train/l1", "train/l2", "valid/l1", "valid/l2"]
    assert series(run) == expected
    info = otlp_files.recording(run)
    assert info["status"] == "finished"  # stopped after the last iteration
    assert info["hyper_parameters"]["num_leaves"] == 4


def test_early_stopping_records_every_round_run_into_a_given_recorder(isolated: Path) -> None:
    """Early stopping: the stopping round is recorded too, and the user's recorder runs on."""
    train, valid = datasets()
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    evals: dict[str, Any] = {}
    callbacks = [
        lgb.early_stopping(2, verbose=False), MarkovLightGBMCallback(recorder),
        lgb.record_evaluation(evals),
    ]  # fmt: skip
    with recorder:
        booster = lgb.train(
            {**PARAMS, "learning_rate": 1.0, "num_leaves": 16}, train, num_boost_round=200,
            valid_sets=[valid], valid_names=["valid"], callbacks=callbacks,
        )  # fmt: skip
        recorder.add_record({"best_iteration": booster.best_iteration})
    run = only_run(isolated)
    rounds = booster.best_iteration + 2  # early stopping ran 2 rounds past the best
    assert rounds < 200
    assert series(run)["valid/l2"] == list(enumerate(evals["valid"]["l2"]))
    assert steps(run, "valid/l2") == list(range(rounds))
    assert otlp_files.recording(run)["status"] == "finished"


def test_finish_stops_an_owned_recorder_after_early_stopping(isolated: Path) -> None:
    """Training ended by early stopping: the owned recorder runs until finish()."""
    train, valid = datasets()
    callback = offline_callback()
    lgb.train(
        {**PARAMS, "learning_rate": 1.0, "num_leaves": 16}, train, num_boost_round=200,
        valid_sets=[valid], callbacks=[lgb.early_stopping(2, verbose=False), callback],
    )  # fmt: skip
    run = only_run(isolated)
    assert otlp_files.recording(run)["status"] == "running"
    callback.finish()
    assert otlp_files.recording(run)["status"] == "finished"


def test_early_stoppings_best_iteration_and_scores_are_in_the_summary(isolated: Path) -> None:
    """After early stopping, finish(): LightGBM's best_iteration and best_score (the first
    validation metric, and each as best_score/<data>/<metric>) are in the summary, as the
    Booster holds them; a given recorder keeps running."""
    train, valid = datasets()
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    callback = MarkovLightGBMCallback(recorder)
    with recorder:
        booster = lgb.train(
            {**PARAMS, "learning_rate": 1.0, "num_leaves": 16}, train, num_boost_round=200,
            valid_sets=[valid], valid_names=["valid"],
            callbacks=[lgb.early_stopping(2, verbose=False), callback],
        )  # fmt: skip
        callback.finish()
        recorder.add_record({"after": 1.0})  # still running
    summary = otlp_files.recording(only_run(isolated))["summary"]
    assert 0 < booster.best_iteration < 200
    assert summary["best_iteration"] == booster.best_iteration
    assert summary["best_score"] == booster.best_score["valid"]["l2"]
    assert summary["best_score/valid/l2"] == booster.best_score["valid"]["l2"]
    assert summary["best_score/valid/l1"] == booster.best_score["valid"]["l1"]


def test_an_owned_recorder_left_running_by_early_stopping_gets_the_best_at_exit(
    tmp_path: Path,
) -> None:
    """A script that never calls finish(): at exit the owned recording is finished with the
    best iteration in its summary."""
    script = tmp_path / "train.py"
    script.write_text(
        "import lightgbm as lgb, numpy as np\n"
        "from markov_otel import RecordingMode\n"
        "from markov_otel.integrations.lightgbm import MarkovLightGBMCallback\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(64, 4)); y = x @ np.array([1.0, -2.0, 0.5, 0.0])\n"
        "train = lgb.Dataset(x[:48], y[:48])\n"
        "valid = lgb.Dataset(x[48:], y[48:], reference=train)\n"
        "params = {'learning_rate': 1.0, 'num_leaves': 16, 'min_data_in_leaf': 2, 'verbose': -1}\n"
        "cb = MarkovLightGBMCallback(name='exit', recording_mode=RecordingMode.OFFLINE)\n"
        "b = lgb.train(params, train, 200, valid_sets=[valid],\n"
        "              callbacks=[lgb.early_stopping(2, verbose=False), cb])\n"
        "print(b.best_iteration)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    info = otlp_files.recording(only_run(tmp_path / "runs"))
    assert info["status"] == "finished"
    assert info["summary"]["best_iteration"] == int(done.stdout.split()[-1]) > 0


def test_cv_records_the_mean_and_the_std_over_folds(isolated: Path) -> None:
    """lgb.cv: <data>/<metric> is the mean, <data>/<metric>_std the spread, as cv returns them."""
    train, _ = datasets()
    table = lgb.cv(
        PARAMS, train, num_boost_round=3, nfold=2, stratified=False, seed=0,
        callbacks=[offline_callback()],
    )  # fmt: skip
    recorded = series(only_run(isolated))
    assert recorded["valid/l2"] == list(enumerate(table["valid l2-mean"]))
    assert recorded["valid/l2_std"] == list(enumerate(table["valid l2-stdv"]))


def test_the_scikit_learn_api_records_each_eval_set(isolated: Path) -> None:
    """LGBMRegressor().fit(eval_X=..., eval_y=..., callbacks=[...]): valid_0/l2 per iteration."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)), rng.normal(size=32)
    x_valid, y_valid = x[:8] + 0.5, y[:8]
    model = lgb.LGBMRegressor(n_estimators=3, num_leaves=4, min_child_samples=2, verbose=-1)
    model.fit(x, y, eval_X=(x_valid,), eval_y=(y_valid,), callbacks=[offline_callback()])
    run = only_run(isolated)
    assert {k: [s for s, _ in v] for k, v in series(run).items()} == {"valid_0/l2": [0, 1, 2]}
