"""Keras 3: `MarkovKerasCallback`, a ``keras.callbacks.Callback`` for ``model.fit``.

    from markov_otel.integrations.keras import MarkovKerasCallback
    model.fit(x, y, epochs=5, validation_split=0.2, callbacks=[MarkovKerasCallback(name="mlp")])

One step axis, the global batch index (counted across epochs, from 0): each training batch's
logs are recorded as ``batch/<name>`` (Keras's running means over the epoch so far), and each
epoch's logs, ``val_*`` included, as ``epoch/<name>`` together with ``epoch/epoch``, at the step
of the epoch's last batch. ``log_batches=False`` records epochs only. At ``on_train_end`` the last
epoch's ``loss`` / ``val_loss`` / ``accuracy`` / ``val_accuracy`` go into the summary with the
number of epochs, and an owned recorder stops. Any Keras backend (``KERAS_BACKEND``) works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markov_otel.integrations.recording import Recording, missing_framework
from markov_otel.recording.recorder import ExperimentRecorder

try:
    import keras
except ImportError as keras_missing:
    if keras_missing.name not in (None, "keras"):  # keras is there, its backend is not
        raise ImportError(
            f"keras is installed but its backend cannot be imported ({keras_missing}); install "
            "that backend or choose one you have, e.g. KERAS_BACKEND=torch (set before keras "
            "is imported)"
        ) from keras_missing
    raise missing_framework("Keras 3 (keras)", "keras", keras_missing) from keras_missing

__all__ = ["MarkovKerasCallback"]

_SUMMARY = {
    "loss": "add_training_loss",
    "val_loss": "add_validation_loss",
    "accuracy": "add_training_accuracy",
    "val_accuracy": "add_validation_accuracy",
}


class MarkovKerasCallback(keras.callbacks.Callback):
    """Records ``model.fit``: ``model.fit(..., callbacks=[MarkovKerasCallback(...)])``.

    Pass ``recorder=`` (an ExperimentRecorder that stays yours) or the ExperimentRecorder
    arguments (``name``, ``project_id``, ``hyper_parameters``, ``recording_mode`` … and the
    keyword extras); ``name`` defaults to ``"keras"``. ``log_model=True`` saves the trained
    model (``model.save``, the ``.keras`` format) into the run dir at the end of fit and keeps
    it as the recording's model artifact (off by default: size).
    """

    def __init__(
        self,
        recorder: ExperimentRecorder | None = None,
        *,
        log_batches: bool = True,
        log_model: bool = False,
        **recorder_args: Any,
    ) -> None:
        super().__init__()
        self._recording = Recording("keras", recorder, recorder_args)
        self._log_model = log_model
        self._log_batches = log_batches
        self._step = -1  # the global index of the last batch trained
        self._epochs = 0
        self._last_epoch_logs: dict[str, Any] = {}

    @property
    def recorder(self) -> ExperimentRecorder:
        """The ExperimentRecorder this callback records into."""
        return self._recording.recorder

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._recording.running()
        self._epochs = 0
        self._last_epoch_logs = {}

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._step += 1
        if self._log_batches and logs:
            self._recording.record({f"batch/{k}": v for k, v in logs.items()}, step=self._step)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epochs += 1
        numbers = self._recording.numbers(logs or {})
        self._last_epoch_logs = numbers
        record = {f"epoch/{k}": v for k, v in numbers.items()}
        record["epoch/epoch"] = epoch
        self._recording.running().add_record(record, step=max(self._step, 0))

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        summary = self._recording.running().summary
        for key, method in _SUMMARY.items():
            if key in self._last_epoch_logs:
                getattr(summary, method)(self._last_epoch_logs[key])
        summary.add_number_of_epochs(self._epochs)
        if self._log_model:
            self._keep_model()
        self._recording.finish("finished")

    def _keep_model(self) -> None:
        """Save the model where it stays (the run dir: add_artifact copies it later, in the
        background) and keep it as the model artifact."""
        recorder = self._recording.running()
        path = recorder.run_dir / "saved-model" / f"{self.model.name or 'model'}.keras"
        path.parent.mkdir(exist_ok=True)
        self.model.save(path)
        recorder.add_artifact(path, kind="model")
