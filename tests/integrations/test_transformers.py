"""MarkovTrainerCallback against a real Trainer: a tiny BERT built from a config, CPU, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# No hub: the model is built from a config in code and the data are tensors made here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it

import otlp_files  # noqa: E402
from recorded import only_run, series, steps, values  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.transformers import MarkovTrainerCallback  # noqa: E402

TRAIN, EVAL, BATCH, EPOCHS = 16, 8, 4, 2
STEPS = TRAIN // BATCH * EPOCHS  # 8 optimizer steps, 4 per epoch


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def dataset(n: int, seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 50, (8,), generator=g),
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": torch.tensor(i % 2),
        }
        for i in range(n)
    ]


def trainer(tmp_path: Path, callback: MarkovTrainerCallback, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": BATCH,
        "num_train_epochs": EPOCHS,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **overrides,
    }
    return transformers.Trainer(
        model=tiny_bert(),
        args=transformers.TrainingArguments(**options),
        train_dataset=dataset(TRAIN, 1),
        eval_dataset=dataset(EVAL, 2),
        callbacks=[callback],
    )


def logged(trainer: Any, key: str) -> list[tuple[int, float]]:
    """What the Trainer itself logged for `key`, as (global step, value)."""
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]


def offline_callback(**kwargs: Any) -> MarkovTrainerCallback:
    return MarkovTrainerCallback(name="tiny-bert", recording_mode=RecordingMode.OFFLINE, **kwargs)


def test_train_records_the_trainers_logs_at_its_global_step(isolated: Path, tmp_path: Path) -> None:
    """Every logged loss at steps 1..8, eval_loss at each epoch's end, train_loss at the end."""
    run_trainer = trainer(tmp_path, offline_callback())
    run_trainer.train()
    run = only_run(isolated)
    recorded = series(run)
    assert recorded["loss"] == logged(run_trainer, "loss")
    assert steps(run, "loss") == list(range(1, STEPS + 1))
    assert recorded["eval_loss"] == logged(run_trainer, "eval_loss")
    assert steps(run, "eval_loss") == [STEPS // 2, STEPS]
    assert steps(run, "train_loss") == [STEPS]
    assert len(steps(run, "learning_rate")) == STEPS
    assert otlp_files.recording(run)["status"] == "finished"


def test_training_arguments_and_model_config_become_hyperparameters(
    isolated: Path, tmp_path: Path
) -> None:
    """args.to_dict() (enums as values, lists kept) and the model config under model_config."""
    trainer(tmp_path, offline_callback(hyper_parameters={"dataset": "synthetic"})).train()
    params = otlp_files.recording(only_run(isolated))["hyper_parameters"]
    assert params["dataset"] == "synthetic"
    assert params["learning_rate"] == 1e-3
    assert params["num_train_epochs"] == EPOCHS
    assert params["per_device_train_batch_size"] == BATCH
    assert params["eval_strategy"] == "epoch"
    assert params["lr_scheduler_type"] == "linear"
    assert params["model_config"]["hidden_size"] == 8
    assert params["model_config"]["vocab_size"] == 50


def test_summary_holds_the_last_losses_and_the_epochs(isolated: Path, tmp_path: Path) -> None:
    """training_loss = the last `loss` logged, validation_loss = the last eval_loss, 2 epochs."""
    run_trainer = trainer(tmp_path, offline_callback())
    run_trainer.train()
    summary = otlp_files.recording(only_run(isolated))["summary"]
    assert summary == {
        "training_loss": logged(run_trainer, "loss")[-1][1],
        "validation_loss": logged(run_trainer, "eval_loss")[-1][1],
        "number_of_epochs": EPOCHS,
    }


def test_train_loss_stands_in_when_no_loss_was_logged(isolated: Path, tmp_path: Path) -> None:
    """logging_steps beyond the run: the final train_loss is the summary's training loss."""
    run_trainer = trainer(tmp_path, offline_callback(), logging_steps=100, eval_strategy="no")
    run_trainer.train()
    run = only_run(isolated)
    assert "loss" not in series(run)
    summary = otlp_files.recording(run)["summary"]
    assert summary["training_loss"] == logged(run_trainer, "train_loss")[0][1]


def test_evaluate_after_train_adds_to_the_same_recording(isolated: Path, tmp_path: Path) -> None:
    """train() then evaluate(): one recording, a third eval_loss at the final step."""
    callback = offline_callback()
    run_trainer = trainer(tmp_path, callback)
    run_trainer.train()
    metrics = run_trainer.evaluate()
    callback.recorder.stop()  # the evaluate() after training continued it; end it here
    run = only_run(isolated)
    assert run.name == callback.recorder.recording_id
    assert steps(run, "eval_loss") == [STEPS // 2, STEPS, STEPS]
    assert values(run, "eval_loss")[-1] == metrics["eval_loss"]
    assert otlp_files.recording(run)["summary"]["validation_loss"] == metrics["eval_loss"]


def test_a_given_recorder_stays_running_after_train(isolated: Path, tmp_path: Path) -> None:
    """recorder=: on_train_end leaves it to its owner, who can still record and stop it."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    trainer(tmp_path, MarkovTrainerCallback(recorder)).train()
    recorder.add_record({"test_accuracy": 0.5})
    recorder.stop()
    run = only_run(isolated)
    assert len(steps(run, "loss")) == STEPS
    assert values(run, "test_accuracy") == [0.5]
    assert otlp_files.recording(run)["summary"]["number_of_epochs"] == EPOCHS


def test_other_processes_than_world_zero_record_nothing(isolated: Path, tmp_path: Path) -> None:
    """A TrainerState of another process (is_world_process_zero False): nothing is recorded."""
    callback = offline_callback()
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    state = transformers.TrainerState(is_world_process_zero=False, global_step=3)
    control = transformers.TrainerControl()
    callback.on_train_begin(args, state, control, model=tiny_bert())
    callback.on_log(args, state, control, logs={"loss": 0.5})
    callback.on_train_end(args, state, control)
    assert not isolated.exists() or not any(isolated.iterdir())


def test_log_model_keeps_the_last_saved_checkpoint_as_the_model_artifact(
    isolated: Path, tmp_path: Path
) -> None:
    """log_model=True with save_strategy="epoch": the last checkpoint directory is the run's
    model artifact (one tar); off by default."""
    from markov_otel.shipping import blobs

    trainer(tmp_path, offline_callback(log_model=True), save_strategy="epoch").train()
    [model] = blobs.artifacts(only_run(isolated))
    assert (model["name"], model["kind"], model["state"]) == ("model", "model", "stored")
    assert model["media_type"] == "application/x-tar"
    assert model["source"].endswith(f"checkpoint-{TRAIN // BATCH * EPOCHS}")
    callback = offline_callback()
    trainer(tmp_path / "two", callback, save_strategy="epoch").train()
    assert blobs.artifacts(callback.recorder.run_dir) == []
