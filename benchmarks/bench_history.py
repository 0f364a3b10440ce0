"""read.history() from a backend: 20 runs x 120k points (20,000 steps x 6 keys), any database.

Run: python benchmarks/bench_history.py [--runs 20] [--steps 20000] [--repeat 3] [--cold 3]
         [--sqlite PATH | --db postgresql://…] [--drop-caches]

Stores the runs through the store's own ingest, a batch of every key of 1,000 steps at a time as
the recorder's batches come (kept in --sqlite between runs of this script; a file filled by a
tree before point_blocks is read from its rows: fill a new one to measure the blocks),
starts `python -m markov_otel.server` on it, then measures, each the median of `--repeat`:

- baseline: the reads history() made before GET /api/v1/history: per run, per key, GET
  /records (a JSON object per point), then the frame built from them as before;
- history, one call per run: `read.history(run, source=URL)` for each run;
- history, multi-run: `read.history([20 ids], source=URL)`: one request; cold (the first read
  after a server process started on the database: the median of `--cold` fresh processes; the
  OS page cache is warm unless `--drop-caches`, which needs root) and warm (the server kept the
  packed records);
- history, max_points=1000: the same, downsampled by the server.

Each as seconds and as a ratio to the baseline. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_series import start_backend

from markov_otel import read
from markov_otel.server.storage import SeriesPoints, open_store

KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "grad_norm")
T0 = 1_700_000_000_000_000_000
BATCH_STEPS = 1000  # steps a stored batch holds (as the recorder's batches of records)
TOKEN = "bench-token"


def run_ids(runs: int, steps: int) -> list[str]:
    return [f"bench-history-{steps}-{i:02d}" for i in range(runs)]


def fill(db: str, ids: list[str], steps: int) -> None:
    store = open_store(db)
    try:
        for n, rid in enumerate(ids):
            if store.get(rid) is not None:
                continue
            resource = [(rid, {"markov.recording.name": f"sweep-{n}"})]
            for lo in range(0, steps, BATCH_STEPS):  # a batch: every key of BATCH_STEPS steps
                at = list(range(lo, min(lo + BATCH_STEPS, steps)))
                batch = []
                for i, key in enumerate(KEYS):
                    values = [math.exp(-s / 5000) + 0.01 * math.sin(s + n + i) for s in at]
                    times = [T0 + s * 1000 + i for s in at]
                    batch.append(SeriesPoints.of(rid, key, at, values, times))
                store.ingest(None, resource, batch)
            print(f"  stored {rid}", file=sys.stderr)
    finally:
        store.close()


def before(url: str, rid: str) -> Any:
    """history() as it was: GET /records per key, a Point per row, a long frame pivoted."""
    import pandas as pd

    rows = [
        (int(r["step"]), int(r["time_unix_nano"]), key, float(r["value"]))
        for key in KEYS
        for r in read._get(url, f"/api/v1/recordings/{rid}/records", {"key": key})
    ]
    rows.sort(key=lambda p: (p[1], p[0]))
    long = pd.DataFrame(rows, columns=["step", "time", "key", "value"])
    long = long.sort_values("time", kind="stable").drop_duplicates(["step", "key"], keep="last")
    wide = long.pivot(index="step", columns="key", values="value")
    wide["time"] = pd.to_datetime(long.groupby("step")["time"].max(), unit="ns", utc=True)
    return wide


def cold_read(db: str, ids: list[str], workdir: Path, drop_caches: bool) -> float:
    """Seconds of the first read.history(ids) of a server process just started on `db`."""
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")  # root only: PermissionError else
    process, url = start_backend(db, workdir)
    try:
        started = time.perf_counter()
        read.history(ids, source=url)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def median_seconds(what: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        what()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", type=int, default=3, help="fresh server processes to time")
    parser.add_argument("--sqlite", help="SQLite file to keep the data in (default: a temp dir)")
    parser.add_argument("--db", help="another database URL (e.g. postgresql://…) instead")
    parser.add_argument(
        "--drop-caches", action="store_true", help="drop the OS page cache before each cold read"
    )
    args = parser.parse_args()
    ids = run_ids(args.runs, args.steps)
    os.environ["MARKOV_API_KEY"] = TOKEN
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        db = args.db or f"sqlite:///{args.sqlite or Path(tmp) / 'history.db'}"
        fill(db, ids, args.steps)
        cold = statistics.median(
            cold_read(db, ids, Path(tmp), args.drop_caches) for _ in range(args.cold)
        )
        process, url = start_backend(db, Path(tmp))
        try:
            whole = read.history(ids, source=url)
            assert all(len(f) == args.steps for f in whole.values()), "a run came back short"
            pd = __import__("pandas")
            pd.testing.assert_frame_equal(
                before(url, ids[0]).reindex(columns=list(whole[ids[0]].columns)),
                whole[ids[0]], check_names=False, check_freq=False, check_index_type=False,
            )  # fmt: skip
            results = {
                "baseline (before: GET /records per key)": median_seconds(
                    lambda: [before(url, rid) for rid in ids], args.repeat
                ),
                "history, one call per run": median_seconds(
                    lambda: [read.history(rid, source=url) for rid in ids], args.repeat
                ),
                f"history, multi-run, cold (fresh server; median of {args.cold})": cold,
                "history, multi-run (one request; packed arrays kept)": median_seconds(
                    lambda: read.history(ids, source=url), args.repeat
                ),
                "history, multi-run, max_points=1000": median_seconds(
                    lambda: read.history(ids, source=url, max_points=1000), args.repeat
                ),
            }
        finally:
            process.terminate()
            process.wait(timeout=30)
    base = next(iter(results.values()))
    load = os.getloadavg()[0]
    cache = "dropped before each cold read" if args.drop_caches else "warm"
    print(f"{args.runs} runs x {args.steps:,} steps x {len(KEYS)} keys; median of {args.repeat}; "
          f"OS page cache {cache}; load average {load:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print("| read | seconds | ratio to baseline |\n|---|---:|---:|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {seconds / base:.3f} |")


if __name__ == "__main__":
    main()
