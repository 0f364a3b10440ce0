"""add_record cost against list.append and raw OTel Gauge.set, and flusher throughput to disk.

Run: python benchmarks/bench_record.py [--records 1000000]

Every figure is a ratio against a baseline measured in this same process: the cost of one
`list.append` of the same dict (the floor for "keep a record"), and four `Gauge.set` calls of
the OTel SDK (what calling SDK instruments per record would cost). Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from markov_otel import ExperimentRecorder, RecordingMode

KEYS = ("loss", "accuracy", "lr", "grad_norm")
CHUNK = 1000  # calls timed together: time_ns() resolution and its own cost stay out of the way


def per_call_ns(fn: Callable[[int], None], calls: int) -> list[float]:
    """ns per call, one sample per CHUNK calls."""
    samples = []
    for start in range(0, calls, CHUNK):
        t0 = time.perf_counter_ns()
        for i in range(start, start + CHUNK):
            fn(i)
        samples.append((time.perf_counter_ns() - t0) / CHUNK)
    return samples


def record(i: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i * 1e-6, "lr": 0.001, "grad_norm": 0.5}


def bench_hot_path(calls: int, base: Path) -> dict[str, list[float]]:
    records = [record(i) for i in range(calls)]
    sink: list[dict[str, float]] = []
    gauges = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    instruments = [gauges.create_gauge(k) for k in KEYS]
    attrs = {"markov.recording.id": "bench"}

    def sdk(i: int) -> None:
        values = records[i]
        for key, gauge in zip(KEYS, instruments, strict=True):
            gauge.set(values[key], attrs)

    recorder = ExperimentRecorder(
        "bench", recording_mode=RecordingMode.OFFLINE, markov_dir=str(base), batch_size=1000
    )
    recorder.start()
    add = recorder.add_record
    results = {
        "list.append": per_call_ns(lambda i: sink.append(records[i]), calls),
        "add_record": per_call_ns(lambda i: add(records[i]), calls),
        "Gauge.set x4": per_call_ns(sdk, calls),
    }
    recorder.stop()
    return results


def flusher_throughput(records: int, base: Path) -> float:
    """Encode + append `records` records through the flusher's own code path, in this thread."""
    from collections import deque

    from markov_otel.flusher import Flusher
    from markov_otel.spool import Spool

    spool = Spool(base / "flusher-bench")
    spool.create()
    buffer = deque((time.time_ns(), i, record(i)) for i in range(records))
    counts = {"recorded": 0, "spooled": 0, "sent": 0, "dropped": 0}
    flusher = Flusher(
        buffer,
        lambda data, n: spool.append("metrics", data),
        lambda: "[]",
        batch_size=1000,
        interval=3600,
        on_cycle=lambda: None,
        last={},
        counts=counts,
    )
    t0 = time.perf_counter()
    flusher._cycle(final=True)  # the same cycle the thread runs, timed without thread wake-ups
    elapsed = time.perf_counter() - t0
    assert counts["spooled"] == records * len(KEYS)
    return counts["spooled"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000, help="hot-path calls per variant")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the flusher")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        hot = bench_hot_path(args.calls, base)
        floor = statistics.median(hot["list.append"])
        print(
            f"hot path, {args.calls} calls, 4 float keys, ns per call (p50 / p90 of "
            f"{CHUNK}-call chunks):"
        )
        for name, samples in hot.items():
            p50 = statistics.median(samples)
            p90 = statistics.quantiles(samples, n=10)[-1]
            print(f"  {name:14} p50 {p50:8.0f}  p90 {p90:8.0f}  = {p50 / floor:5.1f}x list.append")
        sdk = statistics.median(hot["Gauge.set x4"])
        ours = statistics.median(hot["add_record"])
        print(f"  add_record is {sdk / ours:.1f}x faster than Gauge.set x4")
        rate = flusher_throughput(args.records, base)
        print(
            f"flusher: {args.records} records x {len(KEYS)} keys encoded + spooled at "
            f"{rate:,.0f} points/s ({1e9 / rate:.0f} ns/point)"
        )


if __name__ == "__main__":
    main()
