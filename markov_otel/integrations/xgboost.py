"""XGBoost: `MarkovXGBoostCallback`, a ``xgboost.callback.TrainingCallback``.

    from markov_otel.integrations.xgboost import MarkovXGBoostCallback
    xgb.train(params, dtrain, evals=[(dtrain, "train"), (dvalid, "valid")],
              callbacks=[MarkovXGBoostCallback(name="xgb", hyper_parameters=params)])

After each boosting round, each evaluation metric's latest value is recorded as
``<data>/<metric>`` (``valid/rmse``) at step = the round, from 0 (going on from the model's
rounds when training continues a model with ``xgb_model=``). Under ``xgb.cv`` the mean is
recorded as ``<data>/<metric>`` and the standard deviation as ``<data>/<metric>_std``. With early
stopping, ``best_iteration`` and ``best_score`` go into the summary. An owned recorder starts in
``before_training`` and stops in ``after_training``.
"""

from __future__ import annotations

from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework
from markov_otel.recording.recorder import ExperimentRecorder

try:
    from xgboost.callback import TrainingCallback
except ImportError as xgboost_missing:
    raise missing_framework("XGBoost (xgboost)", "xgboost", xgboost_missing) from xgboost_missing

__all__ = ["MarkovXGBoostCallback"]


class MarkovXGBoostCallback(TrainingCallback):
    """Records each round's evaluation metrics: ``xgb.train(..., callbacks=[...])``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"xgboost"``.
    """

    def __init__(self, recorder: ExperimentRecorder | None = None, **recorder_args: Any) -> None:
        super().__init__()
        self._recording = Recording("xgboost", recorder, recorder_args)
        self._first_round = 0

    @property
    def recorder(self) -> ExperimentRecorder:
        """The ExperimentRecorder this callback records into."""
        return self._recording.recorder

    def before_training(self, model: Any) -> Any:
        # xgboost counts `epoch` from 0 in every train() call, also when it continues a model
        # (xgb_model=); the rounds the model already has keep the steps going on instead.
        rounds = getattr(model, "num_boosted_rounds", None)  # a Booster; not under xgb.cv
        self._first_round = rounds() if callable(rounds) else 0
        self._recording.running()
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        record: dict[str, Any] = {}
        for data, metrics in evals_log.items():
            for metric, history in metrics.items():
                if not history:
                    continue
                last = history[-1]
                if isinstance(last, tuple):  # xgb.cv: (mean, std) over the folds
                    record[f"{data}/{metric}"], record[f"{data}/{metric}_std"] = last
                else:
                    record[f"{data}/{metric}"] = last
        self._recording.record(record, step=self._first_round + epoch)
        return False  # never asks training to stop

    def after_training(self, model: Any) -> Any:
        best = _best(model)
        if best is not None:
            summary = self._recording.running().summary
            summary.add("best_iteration", best[0])
            summary.add("best_score", best[1])
        self._recording.finish("finished")
        return model


def _best(model: Any) -> tuple[int, float] | None:
    """Early stopping's best round and score, kept as Booster attributes (None without it)."""
    attr = getattr(model, "attr", None)  # a Booster; xgb.cv hands over a CVPack instead
    if not callable(attr) or attr("best_iteration") is None:
        return None
    return int(attr("best_iteration")), float(attr("best_score"))
