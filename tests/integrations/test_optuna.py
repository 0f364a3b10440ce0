"""MarkovOptunaCallback against real Optuna: tiny studies of a quadratic, each trial a recording."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

import otlp_files  # noqa: E402
from recorded import series  # noqa: E402

from markov_otel import ConfigError, RecordingMode  # noqa: E402
from markov_otel.integrations.optuna import MarkovOptunaCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def recordings(markov_dir: Path) -> dict[int, tuple[Path, dict[str, Any]]]:
    """Each recording under `markov_dir` by its trial number: (run dir, recording.json)."""
    found = [(p, otlp_files.recording(p)) for p in markov_dir.iterdir()]
    return {info["metadata"]["optuna_trial"]: (p, info) for p, info in found}


def offline(**kwargs: Any) -> MarkovOptunaCallback:
    return MarkovOptunaCallback(recording_mode=RecordingMode.OFFLINE, **kwargs)


def objective(trial: Any) -> float:
    """(x - 2)^2, reporting it at steps 0..2; trial 1 is pruned, trial 2 fails."""
    x = trial.suggest_float("x", -10, 10)
    trial.suggest_categorical("opt", ["sgd", "adam"])
    for step in range(3):
        trial.report((x - 2) ** 2 + 2 - step, step)
    if trial.number == 1:
        raise optuna.TrialPruned()
    if trial.number == 2:
        raise ValueError("diverged")
    return (x - 2) ** 2


@pytest.fixture
def study() -> Iterator[Any]:
    yield optuna.create_study(study_name="quad", sampler=optuna.samplers.RandomSampler(seed=0))


def test_each_trial_becomes_a_recording_with_its_params_value_and_status(
    isolated: Path, study: Any
) -> None:
    """As a callback: 3 trials, 3 recordings named quad/trial-N, grouped by the study in their
    metadata; the trial's params as hyperparameters (with the given ones), its value in the
    summary, its reports at their steps, and finished / pruned / failed as Optuna ended them."""
    markov = offline(hyper_parameters={"data": "toy"})
    study.optimize(objective, n_trials=3, callbacks=[markov], catch=(ValueError,))
    found = recordings(isolated)
    assert sorted(found) == [0, 1, 2]
    for trial in study.trials:
        run, info = found[trial.number]
        assert info["name"] == f"quad/trial-{trial.number}"
        assert info["metadata"] == {"optuna_study": "quad", "optuna_trial": trial.number}
        assert info["hyper_parameters"] == {**trial.params, "data": "toy"}
        assert series(run)["value"] == sorted(trial.intermediate_values.items())
    assert [found[n][1]["status"] for n in range(3)] == ["finished", "pruned", "failed"]
    assert found[0][1]["summary"] == {"value": study.trials[0].value}
    pruned = study.trials[1]  # Optuna gives a pruned trial its last report as its value
    assert pruned.value == pruned.intermediate_values[2]
    assert found[1][1]["summary"] == {"value": pruned.value}
    assert found[2][1]["summary"] == {}  # no value


def test_a_tracked_objective_records_while_the_trial_runs(isolated: Path, study: Any) -> None:
    """@markov.track: the trial's recording runs during the objective, which records into it
    through markov.add_record; the callback does not record it a second time."""
    markov = offline(metric_name="loss")
    seen: list[str] = []

    @markov.track
    def tracked(trial: Any) -> float:
        x = trial.suggest_float("x", -10, 10)
        seen.append(markov.recorder.recording_id)
        for step in range(4):
            markov.add_record({"loss": (x - 2) ** 2 + 4 - step})
        return (x - 2) ** 2

    study.optimize(tracked, n_trials=2, callbacks=[markov])
    found = recordings(isolated)
    assert sorted(found) == [0, 1]
    for trial in study.trials:
        run, info = found[trial.number]
        assert run.name == seen[trial.number]
        assert [s for s, _ in series(run)["loss"]] == [0, 1, 2, 3]
        assert info["status"] == "finished"
        assert info["summary"] == {"loss": trial.value}
        assert info["hyper_parameters"] == trial.params


def test_prune_on_reports_recorded_values_and_prunes_the_trial(isolated: Path) -> None:
    """prune_on="loss" with a pruner that stops at loss > 5: the trial is pruned at the first
    step above it, its recording ends `pruned` with the steps up to there, and Optuna holds the
    same reports."""
    markov = offline(prune_on="loss")
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=5.0))

    @markov.track
    def tracked(trial: Any) -> float:
        for step, loss in enumerate([1.0, 3.0, 6.0, 2.0]):
            markov.add_record({"loss": loss, "lr": 0.1}, step=step)
        return 2.0

    study.optimize(tracked, n_trials=1, callbacks=[markov])
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {0: 1.0, 1: 3.0, 2: 6.0}
    ((run, info),) = recordings(isolated).values()
    assert info["status"] == "pruned"
    assert series(run)["loss"] == [(0, 1.0), (1, 3.0), (2, 6.0)]


def test_add_record_outside_a_tracked_objective_says_how() -> None:
    """markov.add_record with no tracked trial running raises, naming @markov.track."""
    with pytest.raises(Exception, match="track"):
        offline().add_record({"loss": 1.0})


def test_recording_id_and_metadata_are_refused() -> None:
    """Per-trial settings given once for every trial: a ConfigError naming them."""
    with pytest.raises(ConfigError, match="recording_id"):
        offline(recording_id="same-for-all")
