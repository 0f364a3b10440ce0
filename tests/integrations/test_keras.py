"""MarkovKerasCallback against real Keras 3 on the torch backend: a one-layer model on CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# The backend is chosen when keras is first imported; torch is the one the test extras bring.
os.environ["KERAS_BACKEND"] = "torch"
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

import otlp_files  # noqa: E402
from recorded import only_run, series, steps, values  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.keras import MarkovKerasCallback  # noqa: E402

BATCHES, EPOCHS, BATCH = 3, 2, 4


def fit(callback: MarkovKerasCallback, epochs: int = EPOCHS) -> Any:
    """Logistic regression on 12 samples (3 batches), validated on 4; returns the History."""
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * BATCHES, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, validation_data=(x[:4], y[:4]),
        callbacks=[callback], verbose=0,
    )  # fmt: skip


def offline_callback(**kwargs: Any) -> MarkovKerasCallback:
    return MarkovKerasCallback(name="tiny-keras", recording_mode=RecordingMode.OFFLINE, **kwargs)


def test_fit_records_every_batch_and_every_epoch_on_one_step_axis(isolated: Path) -> None:
    """batch/* at the global batch index 0..5; epoch/* (val_* too) at each epoch's last batch."""
    history = fit(offline_callback())
    run = only_run(isolated)
    last_batches = [BATCHES - 1, 2 * BATCHES - 1]
    assert steps(run, "batch/loss") == list(range(BATCHES * EPOCHS))
    assert steps(run, "batch/accuracy") == list(range(BATCHES * EPOCHS))
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert series(run)[f"epoch/{name}"] == list(
            zip(last_batches, history.history[name], strict=True)
        )
    assert series(run)["epoch/epoch"] == [(last_batches[0], 0), (last_batches[1], 1)]
    # Keras's batch logs are running means over the epoch: the last one is the epoch's.
    assert values(run, "batch/loss")[BATCHES - 1] == history.history["loss"][0]


def test_summary_hyperparameters_and_status(isolated: Path) -> None:
    """The last epoch's losses and accuracies, the epoch count, the given hyperparameters."""
    history = fit(offline_callback(hyper_parameters={"lr": 0.1, "batch_size": BATCH}))
    info = otlp_files.recording(only_run(isolated))
    assert info["summary"] == {
        "training_loss": history.history["loss"][-1],
        "validation_loss": history.history["val_loss"][-1],
        "training_accuracy": history.history["accuracy"][-1],
        "validation_accuracy": history.history["val_accuracy"][-1],
        "number_of_epochs": EPOCHS,
    }
    assert info["hyper_parameters"] == {"lr": 0.1, "batch_size": BATCH}
    assert info["status"] == "finished"


def test_log_batches_off_records_epochs_only(isolated: Path) -> None:
    """log_batches=False: no batch/* key, the epochs still at the global batch index."""
    fit(offline_callback(log_batches=False))
    recorded = series(only_run(isolated))
    assert not [key for key in recorded if key.startswith("batch/")]
    assert steps(only_run(isolated), "epoch/loss") == [BATCHES - 1, 2 * BATCHES - 1]


def test_a_given_recorder_keeps_counting_across_two_fits(isolated: Path) -> None:
    """Two fit() calls into a recorder the user owns: one recording, steps 0..11, still running."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    callback = MarkovKerasCallback(recorder)
    with recorder:
        fit(callback)
        fit(callback)
        recorder.add_record({"after": 1.0})  # on_train_end did not stop it
    run = only_run(isolated)
    assert steps(run, "batch/loss") == list(range(2 * BATCHES * EPOCHS))
    assert values(run, "after") == [1.0]
    assert otlp_files.recording(run)["summary"]["number_of_epochs"] == EPOCHS


# Keras' own model.save (torch backend, numpy 2) warns about its __array__; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")
def test_log_model_saves_the_model_as_the_model_artifact(isolated: Path) -> None:
    """log_model=True: the trained model, saved as .keras, is the run's one model artifact;
    off by default."""
    from markov_otel.shipping import blobs

    fit(offline_callback(log_model=True))
    [model] = blobs.artifacts(only_run(isolated))
    assert (model["kind"], model["state"]) == ("model", "stored")
    assert model["name"].endswith(".keras") and model["size"] > 0
    callback = offline_callback()
    fit(callback)
    assert blobs.artifacts(callback.recorder.run_dir) == []
