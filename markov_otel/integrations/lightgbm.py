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
"""

from __future__ import annotations

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
        self._recording.record(record, step=env.iteration)
        if env.iteration + 1 >= env.end_iteration:
            self.finish()

    def finish(self, status: str = "finished") -> None:
        """Stop an owned recorder (after early stopping); a given recorder stays yours."""
        self._recording.finish(status)
