"""PyTorch Lightning: `MarkovLogger`, a Lightning ``Logger`` that records into markov_otel.

    from markov_otel.integrations.lightning import MarkovLogger
    trainer = lightning.Trainer(logger=MarkovLogger(name="mnist", project_id="vision"))

Metrics are recorded at Lightning's step; ``save_hyperparameters()`` arrives through
`log_hyperparams`; `finalize` stops an owned recorder with Lightning's outcome (``success`` →
finished, ``failed`` → failed, anything else → interrupted). Only global rank 0 records: on other
ranks ``logger.experiment`` is Lightning's dummy and nothing is started. Works with the
``lightning`` package, or ``pytorch_lightning`` when only that is installed.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework
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
    keyword extras); ``name`` defaults to ``"lightning"``.
    """

    def __init__(self, recorder: ExperimentRecorder | None = None, **recorder_args: Any) -> None:
        super().__init__()
        self._recording = Recording("lightning", recorder, recorder_args)

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
        self._recording.record(metrics, step=step)

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Hyperparameters from ``save_hyperparameters()`` (nested values kept, others as text)."""
        self._recording.add_hyper_parameters(params)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """The end of fit/validate/test: an owned recorder stops with Lightning's outcome."""
        self._recording.finish(_STATUS.get(status, "interrupted"))
