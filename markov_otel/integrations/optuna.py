"""Optuna: `MarkovOptunaCallback`, each trial of a study one recording, grouped by the study.

    from markov_otel.integrations.optuna import MarkovOptunaCallback
    markov = MarkovOptunaCallback(project_id="vision")
    study.optimize(objective, n_trials=20, callbacks=[markov])

Each trial becomes a recording named ``<study>/trial-<number>``: the trial's parameters as
hyperparameters, its objective value in the summary (under ``metric_name``, "value" by default;
a list of names for a multi-objective study), the values it reported (``trial.report``) at their
steps under the same name, and Optuna's outcome as the status: complete → finished, pruned →
pruned, fail → failed. Its metadata ``optuna_study`` (the study's name) and ``optuna_trial``
(the trial's number) group the recordings of a study: the runs table shows them as columns to
sort and filter on, and ``read.runs()`` has them as ``metadata`` values.

As a callback alone, a trial is recorded once it has ended. To record while it runs (its time,
system metrics, values as they come), decorate the objective with `MarkovOptunaCallback.track`
and record through the callback: ``markov.add_record({"val_loss": v}, step=epoch)``. With
``prune_on="val_loss"`` that value is also reported to the trial, and when Optuna's pruner says
so, `add_record` raises ``optuna.TrialPruned`` (the objective's own ``trial.should_prune()``
check, done for it):

    markov = MarkovOptunaCallback(project_id="vision", prune_on="val_loss")

    @markov.track
    def objective(trial):
        ...
            markov.add_record({"val_loss": val_loss}, step=epoch)
        return val_loss

Trials running in threads (``n_jobs``) each record into their own recording.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markov_otel.errors import ConfigError, RecorderStateError
from markov_otel.integrations.params import plain_params
from markov_otel.integrations.recording import missing_framework
from markov_otel.recording.recorder import ExperimentRecorder

try:
    import optuna
except ImportError as optuna_missing:
    raise missing_framework("Optuna (optuna)", "optuna", optuna_missing) from optuna_missing

__all__ = ["MarkovOptunaCallback"]

_STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}
"""Optuna's final trial states as recording statuses (anything else: interrupted)."""


class MarkovOptunaCallback:
    """Records each trial of ``study.optimize(..., callbacks=[MarkovOptunaCallback(...)])``.

    Takes the ExperimentRecorder arguments for every trial's recording (``project_id``,
    ``hyper_parameters`` (merged under the trial's parameters), ``recording_mode`` and the
    keyword extras); ``name`` prefixes the recording names (default: the study's name).
    """

    def __init__(
        self,
        metric_name: str | Sequence[str] = "value",
        *,
        prune_on: str | None = None,
        **recorder_args: Any,
    ) -> None:
        self._names = [metric_name] if isinstance(metric_name, str) else list(metric_name)
        if not self._names or not all(isinstance(n, str) and n for n in self._names):
            raise ConfigError(
                f"metric_name={metric_name!r} must be a name or a list of names (one per "
                "objective), e.g. metric_name='val_loss'"
            )
        if "recording_id" in recorder_args or "metadata" in recorder_args:
            raise ConfigError(
                "recording_id= and metadata= are set per trial by MarkovOptunaCallback "
                "(metadata optuna_study, optuna_trial); leave them out"
            )
        self._prefix = recorder_args.pop("name", None)
        self._params = dict(recorder_args.pop("hyper_parameters", None) or {})
        self._options = recorder_args
        self._prune_on = prune_on
        self._live: dict[tuple[str, int], ExperimentRecorder] = {}  # tracked trials, running
        self._recorded: set[tuple[str, int]] = set()  # trials recorded while they ran
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's tracked trial and its recorder
        self._new_recorder(optuna_study="check", optuna_trial=0)  # bad arguments raise now

    # -- recording while a trial runs ----------------------------------------------------------

    def track(self, objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Decorate the objective: each trial is recorded while it runs (see the module doc)."""

        @functools.wraps(objective)
        def tracked(trial: Any) -> Any:
            key = (trial.study.study_name, trial.number)
            recorder = self._new_recorder(optuna_study=key[0], optuna_trial=key[1])
            recorder.start()
            with self._lock:
                self._live[key] = recorder
            self._local.current, self._local.step = (trial, recorder), -1
            status, value = "failed", None
            try:
                value = objective(trial)
                status = "finished" if _acceptable(value) else "failed"
                return value
            except optuna.TrialPruned:
                status = "pruned"
                raise
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                self._local.current = None
                self._end(recorder, trial.params, value, status)
                with self._lock:
                    self._live.pop(key, None)
                    self._recorded.add(key)

        return tracked

    @property
    def recorder(self) -> ExperimentRecorder:
        """The recording of the trial running in this thread (inside a `track`ed objective)."""
        return self._current()[1]

    def add_record(self, record: dict[str, Any], *, step: int | None = None) -> None:
        """Record into this thread's trial; with ``prune_on``, report that value to the trial
        and raise ``optuna.TrialPruned`` when its pruner says so."""
        trial, recorder = self._current()
        recorder.add_record(record, step=step)
        # The recorder's own rule for a default step: the previous one + 1, from 0.
        at = self._local.step = step if step is not None else self._local.step + 1
        if self._prune_on is None or self._prune_on not in record:
            return
        trial.report(float(record[self._prune_on]), at)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {at} on {self._prune_on}")

    def _current(self) -> tuple[Any, ExperimentRecorder]:
        current = getattr(self._local, "current", None)
        if current is None:
            raise RecorderStateError(
                "no trial is being recorded in this thread: decorate the objective with "
                "@markov.track and call markov.add_record inside it"
            )
        return current

    # -- recording a trial once it has ended ---------------------------------------------------

    def __call__(self, study: Any, trial: Any) -> None:
        """Optuna's callback: a trial that was not recorded while it ran is recorded now."""
        key = (study.study_name, trial.number)
        with self._lock:
            if key in self._recorded:
                self._recorded.discard(key)
                return
        recorder = self._new_recorder(optuna_study=key[0], optuna_trial=key[1])
        recorder.start()
        name = self._names[0]
        for step, value in sorted(trial.intermediate_values.items()):
            if _acceptable(value):
                recorder.add_record({name: value}, step=step)
        value = trial.values if len(self._names) > 1 else trial.value
        self._end(recorder, trial.params, value, _STATUS.get(trial.state.name, "interrupted"))

    # -- both ------------------------------------------------------------------------------------

    def _new_recorder(self, **metadata: Any) -> ExperimentRecorder:
        name = f"{self._prefix or metadata['optuna_study']}/trial-{metadata['optuna_trial']}"
        return ExperimentRecorder(name, metadata=metadata, **self._options)

    def _end(
        self, recorder: ExperimentRecorder, params: Mapping[str, Any], value: Any, status: str
    ) -> None:
        recorder.add_hyper_parameters({**self._params, **plain_params(params)})
        values = value if isinstance(value, (list, tuple)) else [value]
        for name, one in zip(self._names, values, strict=False):
            if _acceptable(one):
                recorder.summary.add(name, float(one))
        recorder.stop(status=status)


def _acceptable(value: Any) -> bool:
    """A value Optuna takes as an objective: a finite number (a list of them, multi-objective)."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_acceptable(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
