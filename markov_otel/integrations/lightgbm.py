"""LightGBM: `MarkovLightGBMCallback`, a callback for ``lgb.train``, ``lgb.cv`` and ``fit``.

    from markov_otel.integrations.lightgbm import MarkovLightGBMCallback
    lgb.train(params, train_set, valid_sets=[valid_set], valid_names=["valid"],
              callbacks=[MarkovLightGBMCallback(name="lgbm", hyper_parameters=params)])

After each iteration, each ``env.evaluation_result_list`` entry is recorded as
``<data>/<metric>`` (``valid/l2``) at step = the iteration (from 0); under ``lgb.cv`` the mean as
``<data>/<metric>`` and the standard deviation as ``<data>/<metric>_std``. It runs before
``early_stopping`` (``order`` 20), so the round that stops training is recorded too.

LightGBM has no end-of-training hook: an owned recorder stops after the last iteration; when
early stopping ends training sooner, it stops at `finish()`, or at exit. To control the end
yourself, pass your own recorder: ``with recorder: lgb.train(..., callbacks=[
MarkovLightGBMCallback(recorder)])``.

Early stopping's result is on the Booster only once ``lgb.train`` returns, so `finish()` (or,
for an owned recorder, the exit) puts it into the summary: ``best_iteration`` (LightGBM's, the
number of iterations to keep: the best step is ``best_iteration - 1``), ``best_score`` (the
first validation metric's) and ``best_score/<data>/<metric>`` for each. With your own recorder,
call ``callback.finish()`` after ``lgb.train`` for them (it leaves your recorder running).
"""

from __future__ import annotations

import atexit
from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework
from markov_otel.recording.recorder import ExperimentRecorder

try:
    import lightgbm  # noqa: F401  # only to say at import time that it is missing
except ImportError as lightgbm_missing:
    raise missing_framework(
        "LightGBM (lightgbm)", "lightgbm", lightgbm_missing
    ) from lightgbm_missing

__all__ = ["MarkovLightGBMCallback"]


class MarkovLightGBMCallback:
    """Records each iteration's evaluation results: ``lgb.train(..., callbacks=[...])``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"lightgbm"``.
    """

    order = 20
    """LightGBM runs callbacks by `order`: after log_evaluation (10), before early_stopping (30)."""
    before_iteration = False

    def __init__(self, recorder: ExperimentRecorder | None = None, **recorder_args: Any) -> None:
        self._recording = Recording("lightgbm", recorder, recorder_args)
        self._booster: Any = None  # the model of the last iteration: its best, after training
        self._exit_hook = False

    @property
    def recorder(self) -> ExperimentRecorder:
        """The ExperimentRecorder this callback records into."""
        return self._recording.recorder

    def __call__(self, env: Any) -> None:
        record: dict[str, Any] = {}
        for entry in env.evaluation_result_list or ():
            data, metric, value = entry[0], entry[1], entry[2]
            record[f"{data}/{metric}"] = value
            if len(entry) > 4:  # lgb.cv: (data, metric, mean, is_higher_better, std)
                record[f"{data}/{metric}_std"] = entry[4]
        self._booster = env.model
        self._recording.record(record, step=env.iteration)
        if self._recording.owned and not self._exit_hook:
            # Registered after the recorder's own exit hook, so it runs first (atexit is LIFO).
            self._exit_hook = True
            atexit.register(self.finish)
        if env.iteration + 1 >= env.end_iteration:
            self.finish()

    def finish(self, status: str = "finished") -> None:
        """Training is over: early stopping's best goes into the summary, and an owned recorder
        stops (a given recorder stays yours, running)."""
        booster, self._booster = self._booster, None
        best = _best(booster)
        if best:
            summary = self._recording.running().summary
            for key, value in best.items():
                summary.add(key, value)
        self._recording.finish(status)


def _best(booster: Any) -> dict[str, float | int]:
    """best_iteration, best_score and best_score/<data>/<metric> of a Booster that early
    stopping stopped ({} otherwise, and under lgb.cv, whose model is a CVBooster)."""
    iteration = getattr(booster, "best_iteration", 0)
    scores = getattr(booster, "best_score", None)
    if not isinstance(iteration, int) or iteration <= 0 or not scores:
        return {}
    best: dict[str, float | int] = {"best_iteration": iteration}
    training = getattr(booster, "_train_data_name", "training")  # early stopping skips it
    for data, metrics in scores.items():
        for metric, value in metrics.items():
            if data != training:
                best.setdefault("best_score", float(value))
            best[f"best_score/{data}/{metric}"] = float(value)
    return best
