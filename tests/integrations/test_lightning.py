"""MarkovLogger against real Lightning: a tiny linear model trained on CPU, read back from disk."""

from __future__ import annotations

import enum
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import textwrap
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

import otlp_files  # noqa: E402
from backend_fixture import Backend  # noqa: E402
from lightning.pytorch.loggers.logger import DummyExperiment  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from recorded import only_run, series, steps, values  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.lightning import MarkovLogger  # noqa: E402

pytestmark = [
    # Lightning's own advice and its use of torch's pytree are not under test here.
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]

BATCHES, EPOCHS = 3, 2


class TinySteps:
    """Linear regression that logs `train_loss` per step and `val_loss` per epoch (the steps of
    a LightningModule of either distribution, `lightning` or `pytorch_lightning`)."""

    def __init__(self, lr: float = 0.1, fail_at_step: int = -1, **extra: Any) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)
        self.train_losses: list[float] = []

    def training_step(self, batch: Any, index: int) -> Any:
        if self.global_step == self.hparams.fail_at_step:
            raise RuntimeError("diverged")
        if self.global_step == self.hparams.get("ctrl_c_at_step", -1):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: Python raises KeyboardInterrupt
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        self.train_losses.append(loss.item())
        return loss

    def validation_step(self, batch: Any, index: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch: Any, index: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Tiny(TinySteps, L.LightningModule):
    pass


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(4 * BATCHES, 4, generator=g), torch.randn(4 * BATCHES, 1, generator=g)
    )
    return DataLoader(data, batch_size=4)


def trainer(logger: Any, lightning: Any = L, callbacks: Any = None) -> Any:
    return lightning.Trainer(
        max_epochs=EPOCHS, logger=logger, log_every_n_steps=1, limit_val_batches=1,
        enable_checkpointing=callbacks is not None, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip


def offline_logger(**kwargs: Any) -> MarkovLogger:
    return MarkovLogger(name="tiny", recording_mode=RecordingMode.OFFLINE, **kwargs)


def test_fit_records_every_logged_step_at_lightnings_step(isolated: Path) -> None:
    """2 epochs x 3 batches: train_loss at steps 0..5 once each, val_loss at each epoch's end."""
    model = Tiny(lr=0.05)
    trainer(offline_logger(project_id="p1")).fit(model, loader(), loader())
    run = only_run(isolated)
    assert series(run)["train_loss"] == list(enumerate(model.train_losses))
    assert len(model.train_losses) == BATCHES * EPOCHS
    assert steps(run, "val_loss") == [2, 5]
    info = otlp_files.recording(run)
    assert info["status"] == "finished"
    assert info["project_id"] == "p1"
    assert info["hyper_parameters"] == {"lr": 0.05, "fail_at_step": -1}


def test_failed_fit_marks_the_recording_failed_and_keeps_its_points(isolated: Path) -> None:
    """An exception in training_step: Lightning's finalize('failed') ends the recording failed."""
    with pytest.raises(RuntimeError, match="diverged"):
        trainer(offline_logger()).fit(Tiny(fail_at_step=3), loader(), loader())
    run = only_run(isolated)
    assert steps(run, "train_loss") == [0, 1, 2]
    assert otlp_files.recording(run)["status"] == "failed"


def test_ctrl_c_during_fit_is_recorded_as_interrupted(isolated: Path) -> None:
    """A real SIGINT in training_step: Lightning calls finalize("failed") and exits 1, and the
    recording says interrupted, with the steps before it."""
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            trainer(offline_logger()).fit(Tiny(ctrl_c_at_step=2), loader(), loader())
    finally:
        signal.signal(signal.SIGINT, before)  # Lightning ignores further Ctrl-C after the first
    run = only_run(isolated)
    assert steps(run, "train_loss") == [0, 1]
    assert otlp_files.recording(run)["status"] == "interrupted"


def test_fit_fills_the_summary_with_last_values_and_epochs(isolated: Path) -> None:
    """After fit(): the last train_loss and val_loss as training and validation loss, every
    validation key's last value, and the number of epochs."""
    model = Tiny()
    trainer(offline_logger()).fit(model, loader(), loader())
    run = only_run(isolated)
    summary = otlp_files.recording(run)["summary"]
    last_val = values(run, "val_loss")[-1]
    assert summary["training_loss"] == pytest.approx(model.train_losses[-1])
    assert summary["validation_loss"] == summary["val_loss"] == last_val
    assert summary["number_of_epochs"] == EPOCHS


def test_model_checkpoints_best_path_and_score_are_in_the_summary(
    isolated: Path, tmp_path: Path
) -> None:
    """ModelCheckpoint(monitor="val_loss"): its best path and score are in the summary."""
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    trainer(offline_logger(), callbacks=[checkpoint]).fit(Tiny(), loader(), loader())
    summary = otlp_files.recording(only_run(isolated))["summary"]
    assert checkpoint.best_model_path
    assert summary["best_model_path"] == checkpoint.best_model_path
    assert summary["best_model_score"] == pytest.approx(float(checkpoint.best_model_score))
    assert summary["best_model_monitor"] == "val_loss"


def test_test_after_fit_adds_to_the_same_recording(isolated: Path) -> None:
    """fit() then test(): one recording holding both, finished again after test(), timed from
    the start of fit()."""
    logger = offline_logger()
    fit_and_test = trainer(logger)
    model = Tiny()
    fit_and_test.fit(model, loader(), loader())
    fit_started = otlp_files.recording(only_run(isolated))["started_at"]
    fit_and_test.test(model, loader())
    run = only_run(isolated)
    assert run.name == logger.version
    assert len(steps(run, "train_loss")) == BATCHES * EPOCHS
    assert steps(run, "test_loss") == [BATCHES * EPOCHS]
    info = otlp_files.recording(run)
    assert info["status"] == "finished"
    assert info["hyper_parameters"]["lr"] == 0.1
    assert info["started_at"] == fit_started


class Optimizer(enum.Enum):
    SGD = "sgd"


def test_saved_hyperparameters_become_plain_values(isolated: Path) -> None:
    """save_hyperparameters with a Namespace, nested dicts, enums, tensors, paths, functions."""
    model = Tiny(
        lr=0.1,
        cfg=Namespace(depth=2, widths=(8, 4), opt={"name": Optimizer.SGD, "momentum": 0.9}),
        scale=torch.tensor(2.5),
        activation=torch.nn.functional.silu,
        data_dir=Path("data") / "train",
        device=torch.device("cpu"),
    )
    trainer(offline_logger()).fit(model, loader(), loader())
    recorded = otlp_files.recording(only_run(isolated))["hyper_parameters"]
    assert recorded == {
        "lr": 0.1,
        "fail_at_step": -1,
        "cfg": {"depth": 2, "widths": [8, 4], "opt": {"name": "sgd", "momentum": 0.9}},
        "scale": 2.5,
        "activation": "torch.nn.functional.silu",
        "data_dir": "data/train",
        "device": "cpu",
    }
    resource = otlp_files.last_resource(only_run(isolated))
    assert resource["markov.hparam.cfg.opt.name"] == "sgd"


def test_text_metrics_are_skipped_and_said_once(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A logged string is left out (numbers of the same call kept), said once per key at INFO."""
    logger = offline_logger()
    caplog.set_level(logging.INFO, logger="markov_otel")
    for step in range(3):
        logger.log_metrics({"loss": torch.tensor(1.0 + step), "phase": "warmup"}, step=step)
    logger.finalize("success")
    run = only_run(isolated)
    assert series(run) == {"loss": [(0, 1.0), (1, 2.0), (2, 3.0)]}
    said = [r for r in caplog.records if "'phase'" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO


def test_finalize_maps_lightnings_outcome_to_the_recording_status(isolated: Path) -> None:
    """success -> finished, failed -> failed, any other outcome -> interrupted."""
    expected = {"success": "finished", "failed": "failed", "aborted": "interrupted"}
    for outcome, status in expected.items():
        logger = offline_logger(recording_id=f"run-{outcome}")
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.finalize(outcome)
        assert otlp_files.recording(isolated / f"run-{outcome}")["status"] == status


def test_only_global_rank_zero_records(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On rank 1 the logger records nothing, creates no run dir, and hands out the dummy."""
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = offline_logger()
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert isinstance(logger.experiment, DummyExperiment)
    assert not isolated.exists() or not any(isolated.iterdir())


def test_a_given_recorder_is_started_and_left_to_its_owner(isolated: Path) -> None:
    """recorder=: started by the first log, never stopped by finalize (the user stops it)."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    logger = MarkovLogger(recorder)
    assert logger.name == "mine"
    assert logger.version == recorder.recording_id
    trainer(logger).fit(Tiny(), loader(), loader())
    assert logger.experiment is recorder
    recorder.add_record({"after_fit": 1.0})  # still running: finalize left it alone
    recorder.stop()
    run = only_run(isolated)
    assert len(steps(run, "train_loss")) == BATCHES * EPOCHS
    assert values(run, "after_fit") == [1.0]
    assert otlp_files.recording(run)["status"] == "finished"


def test_a_recorder_running_under_with_is_recorded_into(isolated: Path) -> None:
    """Inside `with recorder:`, the logger records into it (summary too, beside the user's own
    keys) and `with` decides the status."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        trainer(MarkovLogger(recorder)).fit(Tiny(), loader(), loader())
        recorder.summary.add("note", "fitted")
    run = only_run(isolated)
    assert steps(run, "train_loss") == list(range(BATCHES * EPOCHS))
    summary = otlp_files.recording(run)["summary"]
    assert summary["note"] == "fitted" and summary["number_of_epochs"] == EPOCHS


def test_pytorch_lightning_trainer_takes_the_logger(isolated: Path) -> None:
    """The `pytorch_lightning` distribution's Trainer records through the same logger."""
    pl = pytest.importorskip("pytorch_lightning")

    class PlTiny(TinySteps, pl.LightningModule):
        pass

    trainer(offline_logger(), lightning=pl).fit(PlTiny(), loader(), loader())
    run = only_run(isolated)
    assert steps(run, "train_loss") == list(range(BATCHES * EPOCHS))
    assert otlp_files.recording(run)["status"] == "finished"


def test_with_only_pytorch_lightning_the_logger_is_one_of_its_loggers() -> None:
    """`lightning` not importable: MarkovLogger subclasses pytorch_lightning's Logger instead."""
    if importlib.util.find_spec("pytorch_lightning") is None:
        pytest.skip("pytorch_lightning is not installed")
    code = """
        import importlib.abc, json, sys

        class NoLightning(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "lightning":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoLightning())
        import pytorch_lightning
        from markov_otel.integrations.lightning import MarkovLogger
        print(json.dumps(issubclass(MarkovLogger, pytorch_lightning.loggers.Logger)))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) is True


def test_recorder_and_recorder_arguments_together_are_refused() -> None:
    """recorder= with name= is ambiguous: a ConfigError naming both ways."""
    from markov_otel import ConfigError

    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    with pytest.raises(ConfigError, match=r"either recorder= or .*\(name\)"):
        MarkovLogger(recorder, name="other")


def test_online_fit_stores_every_point_in_the_backend(backend: Backend) -> None:
    """ONLINE: the reference backend stores each train_loss step exactly once."""
    logger = MarkovLogger(
        name="online-tiny",
        recording_mode=RecordingMode.ONLINE,
        endpoint=backend.url,
        api_key=backend.token,
        batch_processing_interval=0.05,
    )
    model = Tiny()
    trainer(logger).fit(model, loader(), loader())
    stored = backend.records(logger.version, "train_loss")
    assert [(r["step"], r["value"]) for r in stored] == list(enumerate(model.train_losses))
    assert [r["step"] for r in backend.records(logger.version, "val_loss")] == [2, 5]


def test_log_model_keeps_the_best_checkpoint_as_the_model_artifact(
    isolated: Path, tmp_path: Path
) -> None:
    """log_model=True: ModelCheckpoint's best checkpoint is the run's one model artifact, its
    bytes by digest; without it no artifact is kept."""
    import hashlib

    from markov_otel.shipping import blobs

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    trainer(offline_logger(log_model=True), callbacks=[checkpoint]).fit(Tiny(), loader(), loader())
    [model] = blobs.artifacts(only_run(isolated))
    best = Path(checkpoint.best_model_path).read_bytes()
    assert (model["kind"], model["state"]) == ("model", "stored")
    assert model["digest"] == "sha256:" + hashlib.sha256(best).hexdigest()
    other = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt2", monitor="val_loss")
    logger = offline_logger()
    trainer(logger, callbacks=[other]).fit(Tiny(), loader(), loader())
    assert blobs.artifacts(isolated / logger.version) == []
