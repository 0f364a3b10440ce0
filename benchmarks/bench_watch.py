"""recorder.watch(model) in a real training loop: ns per step against the same loop unwatched.

Run: python benchmarks/bench_watch.py [--steps 400]

A torch MLP (784-512-512-10, 0.67M parameters) trained with SGD on random batches of 64 on the
CPU, each step recording its loss; the same loop with `watch(model, every=100, log=...)` for
"gradients", "parameters" and "all", and with every=1 (each step: the worst case). Every
figure is a ratio against the unwatched loop in this same process. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from markov_otel import ExperimentRecorder, RecordingMode


def loop(steps: int, base: str, watch: dict[str, Any] | None) -> float:
    """Median ns per training step (forward, backward, step, add_record)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [(torch.randn(64, 784), torch.randint(0, 10, (64,))) for _ in range(8)]
    recorder = ExperimentRecorder(
        "watch", recording_mode=RecordingMode.OFFLINE, markov_dir=base, system_metrics=False
    )
    samples = []
    with recorder:
        if watch is not None:
            recorder.watch(model, **watch)
        for i in range(steps):
            x, y = batches[i % len(batches)]
            t0 = time.perf_counter_ns()
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            recorder.add_record({"loss": loss.item()})
            samples.append(time.perf_counter_ns() - t0)
    return statistics.mean(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    os.environ["MARKOV_CAPTURE_ENVIRONMENT"] = "0"
    torch.set_num_threads(1)
    variants: dict[str, dict[str, Any] | None] = {
        "unwatched": None,
        "gradients, every=100": {"every": 100, "log": "gradients"},
        "parameters, every=100": {"every": 100, "log": "parameters"},
        "all, every=100": {"every": 100, "log": "all"},
        "all, every=1": {"every": 1, "log": "all"},
    }
    with tempfile.TemporaryDirectory() as base:
        results = {name: loop(args.steps, base, watch) for name, watch in variants.items()}
    floor = results["unwatched"]
    print(f"MLP 784-512-512-10, batch 64, CPU, {args.steps} steps; mean per step:")
    for name, ns in results.items():
        print(f"  {name:24} {ns / 1e3:9.1f} us  = {ns / floor:5.2f}x the unwatched loop")


if __name__ == "__main__":
    main()
