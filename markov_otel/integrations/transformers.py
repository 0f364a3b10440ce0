"""Hugging Face Transformers: `MarkovTrainerCallback`, a ``TrainerCallback`` for ``Trainer``.

    from markov_otel.integrations.transformers import MarkovTrainerCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[MarkovTrainerCallback(name="bert")])

Every ``Trainer.log`` (``on_log``) is recorded at ``state.global_step`` with the Trainer's own keys
(``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, ``eval_loss``, ``train_runtime`` …). At
``on_train_begin`` the ``TrainingArguments`` (``args.to_dict()``) become hyperparameters, with the
model's config under ``model_config``. The summary follows the logs: the latest ``loss`` as
training loss (``train_loss`` if no ``loss`` was logged), ``eval_loss`` / ``eval_accuracy`` as
validation loss / accuracy, and the epochs begun at ``on_train_end``, which also stops an owned
recorder. Only the world process zero records. Set ``report_to="none"`` in the arguments unless
you want other trackers too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework
from markov_otel.recording.recorder import ExperimentRecorder

try:
    from transformers import TrainerCallback
except ImportError as transformers_missing:
    raise missing_framework(
        "Hugging Face Transformers (transformers)", "transformers", transformers_missing
    ) from transformers_missing

__all__ = ["MarkovTrainerCallback"]


class MarkovTrainerCallback(TrainerCallback):
    """Records a ``Trainer`` run: ``Trainer(..., callbacks=[MarkovTrainerCallback(...)])``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"transformers"``. ``log_model=True`` keeps the
    saved model (the best checkpoint with ``load_best_model_at_end``, else the last one saved)
    as the recording's model artifact at the end of training (off by default: size).
    """

    def __init__(
        self,
        recorder: ExperimentRecorder | None = None,
        *,
        log_model: bool = False,
        **recorder_args: Any,
    ) -> None:
        self._recording = Recording("transformers", recorder, recorder_args)
        self._log_model = log_model
        self._saved: str | None = None  # the last checkpoint directory the Trainer saved
        self._training_loss_logged = False

    @property
    def recorder(self) -> ExperimentRecorder:
        """The ExperimentRecorder this callback records into."""
        return self._recording.recorder

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        params = args.to_dict()
        config_to_dict = getattr(getattr(kwargs.get("model"), "config", None), "to_dict", None)
        if callable(config_to_dict):  # a PreTrainedModel's config: cheap, and says what ran
            params["model_config"] = config_to_dict()
        self._recording.add_hyper_parameters(params)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if not state.is_world_process_zero or not logs:
            return
        numbers = self._recording.numbers(logs)
        if not numbers:
            return
        recorder = self._recording.running()
        recorder.add_record(numbers, step=state.global_step)
        self._summarise(recorder, numbers)

    def _summarise(self, recorder: ExperimentRecorder, numbers: Mapping[str, Any]) -> None:
        summary = recorder.summary
        if "loss" in numbers:
            summary.add_training_loss(numbers["loss"])
            self._training_loss_logged = True
        elif "train_loss" in numbers and not self._training_loss_logged:
            summary.add_training_loss(numbers["train_loss"])
        if "eval_loss" in numbers:
            summary.add_validation_loss(numbers["eval_loss"])
        if "eval_accuracy" in numbers:
            summary.add_validation_accuracy(numbers["eval_accuracy"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The Trainer saved a checkpoint (output_dir/checkpoint-<global_step>)."""
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            self._saved = folder

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        model = getattr(state, "best_model_checkpoint", None) or self._saved
        if self._log_model and model and os.path.isdir(model):
            self._recording.running().add_artifact(model, name="model", kind="model")
        epoch = state.epoch
        if isinstance(epoch, (int, float)) and math.isfinite(epoch) and epoch >= 0:
            # A run cut by max_steps ends part-way through an epoch: that epoch counts as begun.
            self._recording.running().summary.add_number_of_epochs(math.ceil(epoch - 1e-9))
        self._recording.finish("finished")
