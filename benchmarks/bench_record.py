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


def timed_calls(
    fn: Callable[[dict[str, float]], object], calls: int, work: Callable[[], None] | None = None
) -> tuple[list[int], float]:
    """Each call timed on its own (ns, timer cost included), and the loop's mean ns per call.

    The record is built untimed just before the call, as a training step builds it (so it is in
    cache). `work` runs untimed between calls: a training step's own work, which releases the
    GIL the way GPU kernels and numpy do, so the flusher runs beside the loop.
    """
    samples = [0] * calls
    clock = time.perf_counter_ns
    start = clock()
    for i in range(calls):
        if work is not None:
            work()
        rec = record(i)
        t0 = clock()
        fn(rec)
        samples[i] = clock() - t0
    return samples, (clock() - start) / calls


def record(i: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i * 1e-6, "lr": 0.001, "grad_norm": 0.5}


def step_work() -> None:
    """~50 µs of GIL-free work, standing in for a training step's kernels."""
    time.sleep(50e-6)


def bench_hot_path(calls: int, base: Path) -> dict[str, tuple[list[int], float]]:
    """list.append, add_record and Gauge.set x4 over the same records, in this process."""
    sink: list[dict[str, float]] = []
    gauges = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    instruments = [gauges.create_gauge(k) for k in KEYS]
    attrs = {"markov.recording.id": "bench"}

    def sdk(values: dict[str, float]) -> None:
        for key, gauge in zip(KEYS, instruments, strict=True):
            gauge.set(values[key], attrs)

    recorder = ExperimentRecorder(
        "bench", recording_mode=RecordingMode.OFFLINE, markov_dir=str(base), batch_size=1000
    )
    recorder.start()
    add = recorder.add_record
    results = {
        "empty call": timed_calls(lambda rec: None, calls),
        "list.append": timed_calls(sink.append, calls),
        "add_record": timed_calls(add, calls),
        "Gauge.set x4": timed_calls(sdk, calls),
        "add_record*": timed_calls(add, calls // 10, step_work),
    }
    recorder.stop()
    return results


def flusher_throughput(records: int, base: Path) -> float:
    """Encode + append `records` records through the flusher's own code path, in this thread."""
    from collections import deque

    from markov_otel.flusher import Flusher
    from markov_otel.otel.providers import AggregatedView
    from markov_otel.rules import DEFAULT_MAX_BATCH_BYTES
    from markov_otel.spool import Spool

    spool = Spool(base / "flusher-bench")
    spool.create()
    buffer = deque((time.time_ns(), i, record(i)) for i in range(records))
    view = AggregatedView()
    flusher = Flusher(
        buffer,
        lambda data, n: spool.append("metrics", data),
        lambda: "[]",
        batch_size=1000,
        max_batch_bytes=DEFAULT_MAX_BATCH_BYTES,
        interval=3600,
        on_cycle=lambda: None,
        view=view,
    )
    t0 = time.perf_counter()
    flusher._cycle(final=True)  # the same cycle the thread runs, timed without thread wake-ups
    elapsed = time.perf_counter() - t0
    assert view.counts["spooled"] == records * len(KEYS)
    return view.counts["spooled"] / elapsed


def report_hot_path(hot: dict[str, tuple[list[int], float]], calls: int) -> None:
    timer = int(statistics.median(hot.pop("empty call")[0]))  # the timer plus one call
    raw = {name: sorted(samples) for name, (samples, _) in hot.items()}
    floor = raw["list.append"][len(raw["list.append"]) // 2]
    print(
        f"hot path, {calls} calls, 4 float keys; ns per call, each call timed on its own "
        f"(net = minus the {timer} ns of timing an empty call):"
    )
    for name, samples in raw.items():
        p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
        print(
            f"  {name:13} p50 {p50:6d}  p99 {p99:7d}  p50 net {p50 - timer:6d}  "
            f"loop mean {hot[name][1]:8.0f}  = {p50 / floor:6.1f}x list.append"
        )
    ours, sdk = raw["add_record"], raw["Gauge.set x4"]
    print(
        f"  add_record p50 is {sdk[len(sdk) // 2] / ours[len(ours) // 2]:.1f}x below "
        "Gauge.set x4; a tight loop's mean includes waiting for the flusher (backpressure)"
    )
    print("  add_record* = the same call in a loop doing 50 us of GIL-free work per step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000, help="hot-path calls per variant")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the flusher")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        report_hot_path(bench_hot_path(args.calls, base), args.calls)
        rate = flusher_throughput(args.records, base)
        print(
            f"flusher: {args.records} records x {len(KEYS)} keys encoded + spooled at "
            f"{rate:,.0f} points/s ({1e9 / rate:.0f} ns/point)"
        )


if __name__ == "__main__":
    main()
