"""add_record of an array (a distribution) against numpy.histogram of the same array.

Run: python benchmarks/bench_arrays.py [--calls 30]

For float32 arrays of 1k, 100k and 1M elements, in this one process: the caller's cost of
`add_record({'w': array})` (a copy; the bucketing runs later on the flusher thread: once with
the flusher idle, as a training step's own work leaves it, and once back to back, where the
caller shares the GIL with the flusher bucketing the previous arrays), of
`array.copy()` (the floor), of `numpy.histogram(array)` (the baseline every figure is a ratio
against), and, when importable, of `wandb.Histogram(array)` and tensorboardX's
`SummaryWriter.add_histogram` (both bucket on the caller's thread). Then the flusher's own cost
of bucketing one array (`otel.distributions.bucket`), paid off the caller's thread. Not a test:
nothing here asserts a time.

wandb and tensorboardX are not dependencies: `pip install --target DIR wandb tensorboardX` and
run with DIR on PYTHONPATH to include them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.otel import distributions

SIZES = (1_000, 100_000, 1_000_000)


def median_ns(
    fn: Callable[[], object], calls: int, between: Callable[[], None] | None = None
) -> float:
    """Median ns of `calls` calls, each timed on its own; `between` runs untimed before each."""
    samples = []
    for _ in range(calls):
        if between is not None:
            between()
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples)


def baselines(tmp: Path) -> dict[str, Callable[[Any], object]]:
    """The other trackers' histogram calls that can be imported here."""
    found: dict[str, Callable[[Any], object]] = {}
    try:
        import wandb

        found["wandb.Histogram"] = wandb.Histogram
    except ImportError:
        print("wandb: not importable here (see the module docstring)")
    try:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(tmp / "tbx"))
        steps = iter(range(10**9))
        found["tensorboardX add_histogram"] = lambda a: writer.add_histogram("w", a, next(steps))
    except ImportError:
        print("tensorboardX: not importable here (see the module docstring)")
    return found


def bench_size(n: int, calls: int, tmp: Path, others: dict[str, Callable[[Any], object]]) -> None:
    array = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    recorder = ExperimentRecorder(
        "arrays", recording_mode=RecordingMode.OFFLINE, markov_dir=str(tmp), system_metrics=False
    )

    def between() -> None:
        """Untimed: wait until the flusher has bucketed every array recorded so far (what a
        training step's own work gives it time for)."""
        flusher = recorder._flusher
        flusher.wake()
        while flusher.others_out < recorder._others_in:
            time.sleep(0.001)

    rows: dict[str, float] = {
        "numpy.histogram": median_ns(lambda: np.histogram(array), calls),
        "array.copy()": median_ns(array.copy, calls),
    }
    with recorder:
        add = recorder.add_record
        rows["add_record, flusher idle"] = median_ns(lambda: add({"w": array}), calls, between)
        rows["add_record, back to back"] = median_ns(lambda: add({"w": array}), calls)
    for name, fn in others.items():
        rows[name] = median_ns(lambda fn=fn: fn(array), calls)  # type: ignore[misc]
    rows["flusher: bucket()"] = median_ns(lambda: distributions.bucket(array), calls)
    base = rows["numpy.histogram"]
    print(f"float32 array of {n:,} elements, median of {calls} calls:")
    for name, ns in rows.items():
        print(f"  {name:28} {ns / 1e3:10.1f} us  = {ns / base:5.2f}x numpy.histogram")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per variant and size")
    args = parser.parse_args()
    os.environ["MARKOV_CAPTURE_ENVIRONMENT"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        others = baselines(Path(tmp))
        for n in SIZES:
            bench_size(n, args.calls, Path(tmp), others)


if __name__ == "__main__":
    main()
