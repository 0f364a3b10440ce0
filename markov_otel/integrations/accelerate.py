"""Hugging Face Accelerate: `MarkovTracker`, a tracker for ``Accelerator(log_with=...)``.

    from markov_otel.integrations.accelerate import MarkovTracker
    accelerator = Accelerator(log_with=MarkovTracker(name="llama-sft", project_id="llm"))
    accelerator.init_trackers("llama-sft", config=vars(args))

``init_trackers`` starts the recording and makes ``config`` its hyperparameters (nested values
kept, others as text); each ``accelerator.log(values, step=step)`` is recorded at ``step``
(numbers only; text is skipped and said once); ``accelerator.end_training()`` fills the summary
from the last values (``loss`` / ``train_loss`` as training loss, ``eval_loss`` / ``val_loss``
as validation loss, ``*_accuracy`` likewise, every ``eval*`` / ``val*`` key under its own name)
and stops an owned recorder, finished. A script that raises before ``end_training()`` leaves it
to the exit, which records it failed. Only the main process records, as Accelerate's own
trackers do (``main_process_only``); ``accelerator.get_tracker("markov", unwrap=True)`` is the
ExperimentRecorder there.
"""

from __future__ import annotations

from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework, summarise
from markov_otel.recording.recorder import ExperimentRecorder

try:
    from accelerate.tracking import GeneralTracker, on_main_process
except ImportError as accelerate_missing:
    raise missing_framework(
        "Hugging Face Accelerate (accelerate)", "accelerate", accelerate_missing
    ) from accelerate_missing

__all__ = ["MarkovTracker"]


class MarkovTracker(GeneralTracker):
    """Records an Accelerate run: ``Accelerator(log_with=MarkovTracker(name="run", ...))``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"accelerate"``.
    """

    name = "markov"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, recorder: ExperimentRecorder | None = None, **recorder_args: Any) -> None:
        super().__init__()
        self._recording = Recording("accelerate", recorder, recorder_args)
        self._last: dict[str, float | int | bool] = {}

    @property
    def tracker(self) -> ExperimentRecorder:
        """The ExperimentRecorder (``accelerator.get_tracker("markov", unwrap=True)``)."""
        return self._recording.recorder

    @on_main_process
    def start(self) -> None:
        """``init_trackers``: the recording starts."""
        self._recording.running()

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """``init_trackers(config=...)``: the configuration as hyperparameters."""
        self._recording.add_hyper_parameters(values)

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """``accelerator.log``: the numbers among `values` at `step`."""
        numbers = self._recording.numbers(values)
        if numbers:
            self._recording.running().add_record(numbers, step=step)
            self._last.update(numbers)

    @on_main_process
    def finish(self) -> None:
        """``end_training``: the summary from the last values; an owned recorder stops."""
        if self._last:
            summarise(self._recording.running().summary, self._last)
        self._recording.finish("finished")
