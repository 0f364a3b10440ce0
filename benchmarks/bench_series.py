"""The comparison page's data: 20 runs x 1M points of one key, in SQLite and PostgreSQL.

Run: python benchmarks/bench_series.py [--runs 20] [--points 1000000] [--repeat 7]
         [--sqlite PATH] [--postgres URL (default: $MARKOV_TEST_POSTGRES_URL)]

Stores the runs through the store's own ingest (points and step buckets, as POST /v1/metrics
does; kept between runs of this script: same ids, same data), then measures, each as the median
of `--repeat` runs:

- baseline: `SELECT count(*)` of the same rows (the 20 runs' points of the key);
- series: what GET /api/v1/series?ids=<20>&key=loss&max_points=1000 does on the server (the
  store reads, no HTTP), and its ratio to the baseline;
- raw scan: the same min/max per output bucket read straight from the points (no buckets), which
  is what the series read would cost without them;
- page: the whole comparison page's data over HTTP from a backend subprocess: GET /compare and
  the series call for each of its keys, as the browser makes them.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from markov_otel.server.auth import OPEN
from markov_otel.server.rollups import Plan
from markov_otel.server.series import SeriesQuery, read_series
from markov_otel.server.storage import SeriesPoints, Store, open_store

KEY = "loss"
T0 = 1_700_000_000_000_000_000
BATCH = 50_000
TOKEN = "bench-token"


def run_ids(runs: int, points: int) -> list[str]:
    return [f"bench-series-{points}-{i:02d}" for i in range(runs)]


def fill(store: Store, ids: list[str], points: int) -> float:
    """Ingest what is missing; seconds spent (0 when every run is already there)."""
    started = time.perf_counter()
    for n, rid in enumerate(ids):
        found = store.get(rid)
        if found is not None and found["points"] == points:
            continue
        if found is not None:
            raise SystemExit(f"{rid} holds {found['points']} points, not {points}: use a fresh db")
        resource = {"markov.recording.name": f"sweep-{n}", "markov.hparam.lr": 10 ** -(n % 5)}
        for start in range(0, points, BATCH):
            steps = list(range(start, min(points, start + BATCH)))
            values = [_value(n, s) for s in steps]
            batch = SeriesPoints.of(rid, KEY, steps, values, [T0 + s * 1_000_000 for s in steps])
            store.ingest(None, [(rid, resource)] if start == 0 else [], [batch])
        print(f"  stored {rid}", file=sys.stderr)
    return time.perf_counter() - started


def _value(run: int, step: int) -> float:
    spike = 50.0 if step % 99_991 == run else 0.0
    return math.exp(-step / 300_000) + 0.05 * math.sin(step / 97 + run) + spike


def median_seconds(what: Callable[[], Any], repeat: int) -> float:
    what()  # warm the caches once; the median is of warm runs, as a page reload sees them
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        what()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def count_rows(store: Any, ids: list[str]) -> int:
    marks = ", ".join("?" * len(ids))
    series = f"SELECT series_id FROM series WHERE recording_id IN ({marks}) AND key = ?"
    sql = f"SELECT count(*) FROM points WHERE series_id IN ({series})"
    with store._lock:
        return int(store._run(store._cursor(), sql, [*ids, KEY]).fetchone()[0])


def raw_scan(store: Any, ids: list[str], points: int) -> None:
    """The series read with the buckets ignored: min/max per output bucket over every point."""
    width = -(-points // 499)
    for rid in ids:
        series_id = store._ensure_buckets(rid, KEY)
        store._read_plan(series_id, Plan(width, 0, None, 0, -1, ((0, points - 1),)))


def page_data(url: str, ids: list[str]) -> None:
    """GET /compare?ids=… and the series call of each key, as the page's script makes them."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    joined = ",".join(ids)
    for path in (f"/compare?ids={joined}", f"/api/v1/series?ids={joined}&key={KEY}"):
        request = urllib.request.Request(url + path + "&max_points=1000", headers=headers)
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()


def start_backend(db: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    args = [sys.executable, "-m", "markov_otel.server", "--port", "0", "--port-file",
            str(port_file), "--db", db, "--token", TOKEN]  # fmt: skip
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"backend did not start: {(workdir / 'server.log').read_text()}")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text().strip()}"


def measure(name: str, db: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ids = run_ids(args.runs, args.points)
    store = open_store(db)
    try:
        ingest = fill(store, ids, args.points)
        if name == "PostgreSQL":  # set the visibility map, so count(*) is an index-only scan
            with store._lock:
                store._cursor().execute("VACUUM ANALYZE points")
        rows = count_rows(store, ids)
        query = SeriesQuery(tuple(ids), KEY, 1000, None, None, None)
        answer = read_series(store, OPEN, query)
        shown = sum(len(s["points"]) for s in answer["series"])
        spikes = sum(1 for s in answer["series"] for p in s["points"] if p[1] >= 40)
        result = {
            "db": name, "rows": rows, "ingest_s": ingest, "points_shown": shown,
            "spikes_kept": spikes,
            "spikes": sum(len(range(n, args.points, 99_991)) for n in range(len(ids))),
            "count_s": median_seconds(lambda: count_rows(store, ids), args.repeat),
            "series_s": median_seconds(lambda: read_series(store, OPEN, query), args.repeat),
            "raw_s": median_seconds(lambda: raw_scan(store, ids, args.points), 1),
        }  # fmt: skip
    finally:
        store.close()
    process, url = start_backend(db, workdir)
    try:
        result["page_s"] = median_seconds(lambda: page_data(url, ids), args.repeat)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result["ingest_us"] = ingest_cost(db, min(args.points, 200_000))
    return result


def ingest_cost(db: str, points: int) -> tuple[float, float]:
    """Microseconds per point to ingest one run, with and without the bucket upkeep."""
    costs = []
    for keep_buckets in (True, False):
        store = open_store(db)
        if not keep_buckets:
            store._roll_up = lambda cur, buckets: None  # type: ignore[attr-defined]
        rid = f"ingest-probe-{keep_buckets}-{time.time_ns()}"
        started = time.perf_counter()
        for start in range(0, points, BATCH):
            steps = list(range(start, min(points, start + BATCH)))
            values = [_value(0, s) for s in steps]
            batch = SeriesPoints.of(rid, KEY, steps, values, [T0 + s for s in steps])
            store.ingest(None, [(rid, {})] if start == 0 else [], [batch])
        costs.append((time.perf_counter() - started) / points * 1e6)
        store.close()
    return costs[0], costs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sqlite", help="SQLite file to keep the data in (default: a temp dir)")
    parser.add_argument("--postgres", default=os.environ.get("MARKOV_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        workdir = Path(tmp)
        targets = [("SQLite", f"sqlite:///{args.sqlite or workdir / 'series.db'}")]
        if args.postgres:
            targets.append(("PostgreSQL", args.postgres))
        results = [measure(name, db, args, workdir) for name, db in targets]
    print(f"{args.runs} runs x {args.points:,} points of one key; median of {args.repeat}")
    print("| db | rows | count(*) | series (max_points=1000) | ratio | raw scan, no buckets"
          " | page data over HTTP | points shown | spikes kept |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['db']} | {r['rows']:,} | {r['count_s'] * 1000:.0f} ms"
            f" | {r['series_s'] * 1000:.0f} ms | {r['series_s'] / r['count_s']:.2f}"
            f" | {r['raw_s'] * 1000:.0f} ms | {r['page_s'] * 1000:.0f} ms"
            f" | {r['points_shown']:,} | {r['spikes_kept']} of {r['spikes']} |"
        )
    for r in results:
        with_buckets, without = r["ingest_us"]
        print(f"{r['db']}: ingest {with_buckets:.2f} us/point with buckets, {without:.2f} without")
    for r in results:
        if r["ingest_s"]:
            print(f"{r['db']}: stored in {r['ingest_s']:.0f} s (points and buckets)")


if __name__ == "__main__":
    main()
