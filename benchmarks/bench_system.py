"""System-metrics overhead: the sampler's CPU time, and add_record's p50 with and without it.

Run: python benchmarks/bench_system.py [--seconds 20] [--calls 200000]

1. The sampler alone, sampling every 0.1 s for `--seconds`: its thread's own CPU time
   (`time.thread_time` inside the thread, setup excluded) per sample, and so the fraction of one
   core it costs at the default interval (10 s) and at 1 s.
2. add_record in this same process on two recorders alike but for system metrics (off; on,
   sampling every 0.1 s = 100x the default rate), called in interleaved blocks so both see the
   same machine load: p50 and p99 of each, and their ratio. Goal: under 0.5% of a core, no change
   to p50. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_record import timed_calls

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.otel.series import SeriesTable
from markov_otel.recording.system_metrics import DEFAULT_INTERVAL, SystemSampler

FAST = 0.1  # seconds between samples in this benchmark: 100x the default rate


def sampler_cost(seconds: float) -> tuple[int, float, float]:
    """(samples, CPU seconds per sample, setup CPU seconds) of a sampler running `seconds`."""
    kept: list[object] = []
    sampler = SystemSampler(lambda t, v: kept.append(v), SeriesTable(), FAST)
    sampler.start()
    time.sleep(seconds)
    sampler.stop(10)
    return (
        sampler.samples,
        sampler.sampling_cpu_seconds / sampler.samples,
        sampler.setup_cpu_seconds,
    )


def interleaved_p50(calls: int, base: Path) -> dict[str, list[int]]:
    """add_record ns per call on a recorder without and one with system metrics, in turns."""
    recorders = {
        name: ExperimentRecorder(
            f"bench-{name}",
            recording_mode=RecordingMode.OFFLINE,
            markov_dir=str(base),
            system_metrics=on,
            system_metrics_interval=FAST,
        )
        for name, on in (("off", False), ("on", True))
    }
    samples: dict[str, list[int]] = {name: [] for name in recorders}
    for recorder in recorders.values():
        recorder.start()
    block = 10_000
    for _ in range(max(1, calls // block)):
        for name, recorder in recorders.items():
            samples[name] += timed_calls(recorder.add_record, block)[0]
    for recorder in recorders.values():
        recorder.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="sampler run time")
    parser.add_argument("--calls", type=int, default=200_000, help="add_record calls per recorder")
    args = parser.parse_args()

    count, per_sample, setup = sampler_cost(args.seconds)
    print(f"sampler: {count} samples in {args.seconds:.0f} s at {FAST} s intervals")
    print(
        f"  CPU per sample {per_sample * 1e3:.3f} ms (thread time); setup once {setup * 1e3:.0f} ms"
    )
    for interval in (DEFAULT_INTERVAL, 1.0, FAST):
        print(f"  at {interval:>4} s: {per_sample / interval * 100:.4f}% of one core")

    with tempfile.TemporaryDirectory() as tmp:
        timings = interleaved_p50(args.calls, Path(tmp))
    print(f"add_record, {args.calls} calls each, interleaved blocks of 10k, 4 float keys (ns):")
    p50 = {}
    for name, values in timings.items():
        values.sort()
        p50[name] = values[len(values) // 2]
        p99 = values[int(len(values) * 0.99)]
        print(f"  system metrics {name:3}: p50 {p50[name]:6d}  p99 {p99:7d}")
    print(
        f"  p50 with / without = {p50['on'] / p50['off']:.3f} (sampling at 100x the default rate)"
    )


if __name__ == "__main__":
    main()
