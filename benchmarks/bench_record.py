"""add_record cost against list.append and raw OTel Gauge.set, and flusher throughput to disk.

Run: python benchmarks/bench_record.py [--records 1000000]

Every figure is a ratio against a baseline measured in this same process: the cost of one
`list.append` of the same dict (the floor for "keep a record"), and four `Gauge.set` calls of
the OTel SDK (what calling SDK instruments per record would cost). Not a test: nothing here
asserts a time.

Another tree (a baseline checkout): PYTHONPATH=/tmp/base python benchmarks/bench_record.py. A
tree that starts its encoder process with `python -m` (before `encoder_process.run`) runs the
working directory's markov_otel there: run such a tree from its own directory (cd /tmp/base).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from markov_otel import ExperimentRecorder, RecordingMode

KEYS = ("loss", "accuracy", "lr", "grad_norm")


def timed_calls(
    fn: Callable[[Any], object],
    calls: int,
    work: Callable[[], None] | None = None,
    make: Callable[[int], Any] | None = None,
    *,
    step: bool = False,
) -> tuple[list[int], float]:
    """Each call timed on its own (ns, timer cost included), and the loop's mean ns per call.

    The record is built untimed just before the call, as a training step builds it (so it is in
    cache). `work` runs untimed between calls: a training step's own work, which releases the
    GIL the way GPU kernels and numpy do, so the flusher runs beside the loop. `step`: call
    fn(rec, step=i), as the framework integrations and W&B-style loops do.
    """
    samples = [0] * calls
    clock = time.perf_counter_ns
    start = clock()
    for i in range(calls):
        if work is not None:
            work()
        rec = (make or record)(i)
        if step:
            t0 = clock()
            fn(rec, step=i)
        else:
            t0 = clock()
            fn(rec)
        samples[i] = clock() - t0
    return samples, (clock() - start) / calls


def record(i: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i * 1e-6, "lr": 0.001, "grad_norm": 0.5}


def nested(i: int) -> dict[str, dict[str, float]]:
    """The same four numbers as a nested record ("train/loss", … once flattened)."""
    return {
        "train": {"loss": 1.0 / (i + 1), "accuracy": i * 1e-6},
        "val": {"loss": 0.001, "accuracy": 0.5},
    }


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
        "step=i": timed_calls(add, calls, step=True),
        "Gauge.set x4": timed_calls(sdk, calls),
        "add_record*": timed_calls(add, calls // 10, step_work),
        "nested": timed_calls(add, calls, make=nested),
    }
    recorder.stop()
    return results


def flusher_throughput(records: int, base: Path) -> tuple[float, float]:
    """Encode + append `records` records through the flusher's own code path, in this thread:
    ns of thread CPU per point in all, and of it in the spool's write (a syscall that releases
    the GIL, so the training thread runs meanwhile)."""
    from collections import deque

    from markov_otel.otel.providers import AggregatedView
    from markov_otel.rules import DEFAULT_MAX_BATCH_BYTES
    from markov_otel.shipping.flusher import Flusher
    from markov_otel.shipping.spool import Spool

    spool = Spool(base / "flusher-bench")
    spool.create()
    buffer: deque[Any] = deque()  # flat, as the recorder keeps it: time, step, values, ...
    for i in range(records):
        buffer.extend((time.time_ns(), i, record(i)))
    view = AggregatedView()
    writing = [0]

    def write(data: bytes, points: int) -> None:
        t0 = time.thread_time_ns()
        spool.append("metrics", data)
        writing[0] += time.thread_time_ns() - t0

    flusher = Flusher(
        buffer,
        write,
        lambda: "[]",
        batch_size=1000,
        max_batch_bytes=DEFAULT_MAX_BATCH_BYTES,
        interval=3600,
        on_cycle=lambda: None,
        view=view,
    )
    t0 = time.thread_time_ns()  # CPU time of this thread: what a flusher takes from the loop
    flusher._cycle(final=True)  # the same cycle the thread runs, timed without thread wake-ups
    elapsed = time.thread_time_ns() - t0
    points = view.counts["spooled"]
    assert points == records * len(KEYS)
    forget(spool.dir)
    return elapsed / points, writing[0] / points


def forget(run_dir: Path) -> None:
    """Remove a measured run's files, so the next measurement does not depend on them: their
    page cache is freed for the next writes to reuse, where otherwise the kernel takes pages
    the VM must fault in afresh, which costs more than the encoding (docs/architecture.md)."""
    shutil.rmtree(run_dir)


def tight_loop(records: int, base: Path, encoder_process: str) -> tuple[float, ...]:
    """ns per record of a whole tight loop (start to stop(): the hot path, the flusher's share
    of the GIL, backpressure, the final drain) with the setting `encoder_process`, and of the
    same loop doing list.append; then the CPU per record of the training thread, of the other
    threads (the flusher), and of child processes (the encoder process)."""
    sink: list[dict[str, float]] = []
    t0 = time.perf_counter_ns()
    for i in range(records):
        sink.append(record(i))
    floor = (time.perf_counter_ns() - t0) / records
    del sink  # a million live dicts would make every collection of the loop below walk them
    os.environ["MARKOV_ENCODER_PROCESS"] = encoder_process
    try:
        recorder = ExperimentRecorder(
            "loop", recording_mode=RecordingMode.OFFLINE, markov_dir=str(base), system_metrics=False
        )
    finally:
        del os.environ["MARKOV_ENCODER_PROCESS"]
    recorder.start()
    add = recorder.add_record
    process0, thread0, children0 = _process_cpu_ns(), time.thread_time_ns(), _children_cpu_ns()
    t0 = time.perf_counter_ns()
    for i in range(records):
        add(record(i))
    recorder.stop()
    wall = (time.perf_counter_ns() - t0) / records
    training = (time.thread_time_ns() - thread0) / records
    others = (_process_cpu_ns() - process0) / records - training
    children = (_children_cpu_ns() - children0) / records
    forget(recorder.run_dir)
    return wall, floor, training, others, children


def report_tight_loop(records: int, base: Path, mode: str, busy: bool) -> None:
    whole, floor, training, others, children = tight_loop(records, base, mode)
    print(
        f"tight loop of {records} records, encoder_process={mode}, "
        f"{'other core busy' if busy else 'no competitor'}, start to stop(): "
        f"{whole:.0f} ns per record all-inclusive ({whole / floor:.1f}x the same loop "
        f"doing list.append: {floor:.0f} ns); CPU per record: training thread "
        f"{training:.0f} ns, flusher {others:.0f} ns, encoder process {children:.0f} ns"
    )


@contextlib.contextmanager
def other_core_busy(busy: bool) -> Iterator[None]:
    """While inside, a process spinning on the CPU (`busy`): the machine's other core is taken,
    as by a data loader or a second job, and the encoder process competes with it."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _process_cpu_ns() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e9


def _children_cpu_ns() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # those waited for: after stop()
    return (usage.ru_utime + usage.ru_stime) * 1e9


def step_allocation(calls: int) -> tuple[float, float]:
    """ns per default step: `previous + 1` kept in an attribute (not thread-safe) against
    next() of the recorder's step iterator (atomic under the GIL)."""
    from markov_otel.recording.steps import default_steps

    class Holder:
        step = -1

    holder, steps = Holder(), default_steps(0)
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        step = holder.step + 1
        holder.step = step
    plain = (time.perf_counter_ns() - t0) / calls
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        step = next(steps)
    return plain, (time.perf_counter_ns() - t0) / calls


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
    explicit = raw["step=i"]
    print(
        f"  step=i = add_record(rec, step=i): p50 "
        f"{explicit[len(explicit) // 2] - ours[len(ours) // 2]:+d} ns against add_record(rec)"
    )
    print("  add_record* = the same call in a loop doing 50 us of GIL-free work per step")
    print(
        f"  nested (the same 4 numbers as two nested dicts, after the first): p50 "
        f"{raw['nested'][len(raw['nested']) // 2] / ours[len(ours) // 2]:.2f}x the flat p50; "
        f"add_record p99 is {ours[int(len(ours) * 0.99)] / sdk[int(len(sdk) * 0.99)]:.2f}x "
        "Gauge.set x4's p99"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000, help="hot-path calls per variant")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the flusher")
    args = parser.parse_args()
    # `pip inspect` and git, run once per recording in subprocesses, are not the cost of a
    # record: they would compete for the cores (and count as child CPU) in every figure
    os.environ["MARKOV_CAPTURE_ENVIRONMENT"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        report_hot_path(bench_hot_path(args.calls, base), args.calls)
        cpu, write = flusher_throughput(args.records, base)
        print(
            f"flusher: {args.records} records x {len(KEYS)} keys encoded + spooled: "
            f"{cpu:.0f} ns of thread CPU per point ({1e9 / cpu:,.0f} points/s), of which "
            f"{write:.0f} in the write (GIL released): {cpu - write:.0f} ns of GIL time a point"
        )
        for busy in (False, True):
            with other_core_busy(busy):
                for mode in ("never", "auto"):
                    report_tight_loop(args.records, base, mode, busy)
        plain, atomic = step_allocation(args.calls)
        print(
            f"default step: {atomic:.0f} ns atomic (next of the step iterator) against "
            f"{plain:.0f} ns for previous + 1 in an attribute (+{atomic - plain:.0f} ns)"
        )


if __name__ == "__main__":
    main()
