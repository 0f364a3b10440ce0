"""A real, tiny experiment: logistic regression by gradient descent, recorded with markov_otel.

    python -m markov_otel.example            # where your settings say: locally until an
                                             # endpoint (or `mkv mode online`) is configured
    python -m markov_otel.example --online   # to the configured endpoint (see `mkv serve`)

Pure Python on synthetic data, so it runs on a fresh machine in a second or two.
"""

from __future__ import annotations

import argparse
import math
import random

from markov_otel import (
    BinaryOperation,
    ExperimentAlertCondition,
    ExperimentRecorder,
    ModelClass,
    RecordingMode,
)


def make_data(n: int, rng: random.Random) -> list[tuple[float, float, int]]:
    """Two Gaussian blobs, labels 0 and 1."""
    data = []
    for _ in range(n):
        label = rng.random() < 0.5
        centre = 1.0 if label else -1.0
        data.append((rng.gauss(centre, 1.0), rng.gauss(centre, 1.0), int(label)))
    return data


def evaluate(w: list[float], data: list[tuple[float, float, int]]) -> tuple[float, float]:
    loss = correct = 0.0
    for x1, x2, y in data:
        p = 1.0 / (1.0 + math.exp(-(w[0] * x1 + w[1] * x2 + w[2])))
        p = min(max(p, 1e-12), 1 - 1e-12)
        loss -= y * math.log(p) + (1 - y) * math.log(1 - p)
        correct += (p >= 0.5) == bool(y)
    return loss / len(data), correct / len(data)


def train(recorder: ExperimentRecorder, epochs: int, lr: float, seed: int) -> None:
    rng = random.Random(seed)
    train_set, val_set = make_data(800, rng), make_data(200, rng)
    w = [0.0, 0.0, 0.0]
    for epoch in range(epochs):
        grad = [0.0, 0.0, 0.0]
        for x1, x2, y in train_set:
            err = 1.0 / (1.0 + math.exp(-(w[0] * x1 + w[1] * x2 + w[2]))) - y
            grad = [grad[0] + err * x1, grad[1] + err * x2, grad[2] + err]
        w = [wi - lr * gi / len(train_set) for wi, gi in zip(w, grad, strict=True)]
        loss, acc = evaluate(w, train_set)
        val_loss, val_acc = evaluate(w, val_set)
        recorder.add_record(
            {"loss": loss, "accuracy": acc, "val": {"loss": val_loss, "accuracy": val_acc}},
            step=epoch,
        )
    recorder.summary.add_training_loss(loss)
    recorder.summary.add_validation_loss(val_loss)
    recorder.summary.add_training_accuracy(acc)
    recorder.summary.add_validation_accuracy(val_acc)
    recorder.summary.add_number_of_epochs(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--online", action="store_true", help="record to the Markov backend")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    mode = RecordingMode.ONLINE if args.online else None  # None: follow the settings
    hparams = {"lr": 0.5, "epochs": args.epochs, "seed": 7, "optimizer": "gd"}
    recorder = ExperimentRecorder(
        name="logreg-blobs",
        project_id="examples",
        notes="logistic regression on two blobs",
        model_class=ModelClass.CLASSIFICATION,
        hyper_parameters=hparams,
        recording_mode=mode,
    )
    recorder.register()
    recorder.attach_alert_on(
        ExperimentAlertCondition("loss", BinaryOperation.LESS_THAN, 0.35), "loss below 0.35"
    )
    with recorder:
        train(recorder, args.epochs, hparams["lr"], hparams["seed"])
    print(f"recorded {recorder.recording_id} ({recorder.config['recording_mode'].value})")
    print(f"  run dir:    {recorder.run_dir}")
    print(f"  experiment: {recorder.experiment_url}")
    print(f"  inspect:    mkv show {recorder.recording_id}")


if __name__ == "__main__":
    main()
