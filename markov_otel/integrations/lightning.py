"""PyTorch Lightning: `MarkovLogger`, a Lightning ``Logger`` that records into markov_otel.

    from markov_otel.integrations.lightning import MarkovLogger
    trainer = lightning.Trainer(logger=MarkovLogger(name="mnist", project_id="vision"))

Metrics are recorded at Lightning's step; ``save_hyperparameters()`` arrives through
`log_hyperparams`; `finalize` stops an owned recorder with Lightning's outcome (``success`` →
finished; ``failed`` → failed, but interrupted when a KeyboardInterrupt (Ctrl-C) is what
Lightning is handling, terminated for a SystemExit (SIGTERM); anything else → interrupted).

The summary, at each `finalize`: the last ``train_loss`` / ``val_loss`` / ``train_acc`` /
``val_acc`` (also ``loss``, ``val/loss``, ``validation_loss``, ``*_accuracy``, ``*_epoch``
variants) as training / validation loss and accuracy, the last value of every key starting with
``val`` under its own name, and the number of epochs (the last logged ``epoch`` + 1). Each
checkpoint a ``ModelCheckpoint`` saves updates ``best_model_path``, ``best_model_score`` and
``best_model_monitor``.

Only global rank 0 records: on other ranks ``logger.experiment`` is Lightning's dummy and nothing
is started. Works with the ``lightning`` package, or ``pytorch_lightning`` when only that is
installed.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework, summarise
from markov_otel.recording.recorder import ExperimentRecorder

try:
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.loggers.logger import rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as lightning_missing:
    try:  # the older distribution of the same code
        from pytorch_lightning.loggers import Logger
        from pytorch_lightning.loggers.logger import rank_zero_experiment
        from pytorch_lightning.utilities import rank_zero_only
    except ImportError:
        raise missing_framework(
            "PyTorch Lightning (lightning)", "lightning", lightning_missing
        ) from lightning_missing

__all__ = ["MarkovLogger"]

_STATUS = {"success": "finished", "finished": "finished", "failed": "failed"}
"""Lightning's finalize() outcomes as recording statuses; any other is `interrupted`."""


class MarkovLogger(Logger):
    """Records a Lightning run: ``Trainer(logger=MarkovLogger(name="run", ...))``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"lightning"``. ``log_model=True`` keeps the best
    checkpoint of a ``ModelCheckpoint`` as the recording's model artifact when fit ends (off by
    default: checkpoints are large).
    """

    def __init__(
        self,
        recorder: ExperimentRecorder | None = None,
        *,
        log_model: bool = False,
        **recorder_args: Any,
    ) -> None:
        super().__init__()
        self._recording = Recording("lightning", recorder, recorder_args)
        self._log_model = log_model
        self._best: str | None = None  # the best checkpoint's path, once one was saved
        self._last: dict[str, float | int | bool] = {}  # each key's last logged value
        self._new = False  # logged since the last finalize: the summary is behind

    @property
    def name(self) -> str:
        """The recording's name."""
        return self._recording.recorder.name

    @property
    def version(self) -> str:
        """The recording id (Lightning's run version)."""
        return self._recording.recorder.recording_id

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentRecorder:
        """The running ExperimentRecorder, e.g. ``self.logger.experiment.summary.add(...)``."""
        return self._recording.running()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record one step's metrics at Lightning's step (numbers only; text is skipped)."""
        numbers = self._recording.numbers(metrics)
        if numbers:
            self._recording.running().add_record(numbers, step=step)
            self._last.update(numbers)
            self._new = True

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Hyperparameters from ``save_hyperparameters()`` (nested values kept, others as text)."""
        self._recording.add_hyper_parameters(params)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """A ModelCheckpoint saved: its best checkpoint so far goes into the summary."""
        path = getattr(checkpoint_callback, "best_model_path", "")
        if not path:
            return
        self._best = str(path)
        summary = self._recording.running().summary
        summary.add("best_model_path", str(path))
        score = self._recording.numbers({"score": checkpoint_callback.best_model_score})
        if "score" in score:
            summary.add("best_model_score", score["score"])
        if getattr(checkpoint_callback, "monitor", None):
            summary.add("best_model_monitor", str(checkpoint_callback.monitor))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """The end of fit/validate/test: the summary brought up to date, then an owned recorder
        stops with Lightning's outcome."""
        if self._new:
            self._new = False
            self._summarise()
        if self._log_model and self._best and status == "success":
            self._recording.running().add_artifact(self._best, kind="model")
            self._best = None  # a later test() finalizes again: the model is kept once
        self._recording.finish(_outcome(status))

    def _summarise(self) -> None:
        summary = self._recording.running().summary
        summarise(summary, self._last)
        if "epoch" in self._last:
            summary.add_number_of_epochs(int(self._last["epoch"]) + 1)


def _outcome(status: str) -> str:
    """The recording status of Lightning's finalize(status): Lightning says "failed" for any
    exception it handles, Ctrl-C included; the exception itself tells them apart."""
    if status == "failed":
        handling = sys.exc_info()[1]
        if isinstance(handling, KeyboardInterrupt):
            return "interrupted"
        if isinstance(handling, SystemExit) or type(handling).__name__ == "SIGTERMException":
            return "terminated"
    return _STATUS.get(status, "interrupted")
