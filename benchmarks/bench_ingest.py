"""Backend ingest alone: points/s of POST /v1/metrics, per body encoding and database.

Run: python benchmarks/bench_ingest.py [--bodies 8] [--records 7500] [--rounds 2]
         [--encoding json,protobuf] [--db sqlite,postgres]
         [--postgres URL (default: $MARKOV_TEST_POSTGRES_URL)]
         [--baseline NAME=PATH ...]   e.g. --baseline f5e59d3=/tmp/perf-base
         [--workers 1,2]              the real server over loopback instead (PostgreSQL)
         [--replay]                   then every body again, keyless (a collector's replay)
         [--arrays]                   recorded arrays (ExponentialHistogram points) instead

Bodies are built like the recorder's spool lines (its own encoder and resource attributes):
4 keys x `--records` records per body (~4 MB of OTLP-JSON at 7500), consecutive steps of one
recording, each POSTed with an Idempotency-Key as the sender does; protobuf bodies are the same
requests in the official proto classes. Each (tree, database, encoding) runs in a child process
whose PYTHONPATH is that tree, on a fresh SQLite file or a fresh PostgreSQL schema, calling the
ASGI app in-process (httpx's ASGITransport: no sockets), one body at a time. The trees named by
`--baseline` (a `git worktree add /tmp/perf-base f5e59d3` checkout) run in the same rounds, so
the ratios compare numbers taken under the same load. The best round of each counts.

Besides points/s (wall time, best round) the tables give the backend process's CPU time a
point (least round; PostgreSQL's own work is not in it): on a machine other jobs share, CPU time
moves far less than wall time. `--replay` then sends every body again without its key, as a
collector replaying a stored run would: a backend that knows points by their identity stores
nothing (`stored 0`), an older one stores them all again.

`--arrays` makes every point a recorded array (a 1,000-element histogram the recorder's own
encoder bucketed) instead of a number: the bodies carry ExponentialHistogram points, which the
backend keeps as distribution events (counted as stored distributions); use a smaller
`--records` (each point is ~1 kB of OTLP-JSON).

`--workers N,...` instead starts `python -m markov_otel.server --workers N` (this tree) on
PostgreSQL and POSTs the bodies over loopback from 2*N client threads, each its own recording.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
KEYS = ("loss", "accuracy", "lr", "grad_norm")
PROTOBUF, JSON = "application/x-protobuf", "application/json"


# -- bodies ------------------------------------------------------------------------------------


def build_bodies(
    out: Path, bodies: int, records: int, recording_id: str, arrays: bool = False
) -> int:
    """Spool-like lines (OTLP-JSON) and their protobuf twins in `out`; returns points per body.
    `arrays`: each point a recorded array (an ExponentialHistogram point) instead of a number."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from markov_otel.otel.encoding import MetricsEncoder, attributes_json
    from markov_otel.otel.resource import experiment_attributes

    info = {
        "recording_id": recording_id,
        "name": "bench-ingest",
        "project_id": "bench",
        "hyper_parameters": {"lr": 0.001, "optimizer": {"name": "adamw", "beta1": 0.9}},
        "status": "running",
        "started_at": time.time(),
    }
    resource = attributes_json(experiment_attributes(info))
    encoder = MetricsEncoder()
    t0 = time.time_ns()
    for n in range(bodies):
        steps = range(n * records, (n + 1) * records)
        if arrays:
            line, points = _array_line(t0, steps, resource)
        else:
            batch = [
                (t0 + step * 1000, step, {k: 1.0 / (step + i + 1) for i, k in enumerate(KEYS)})
                for step in steps
            ]
            line, points = encoder.encode(batch, resource)
        (out / "bodies").mkdir(exist_ok=True)
        data = line if isinstance(line, bytes) else line.encode()  # the encoder returns bytes now
        (out / "bodies" / f"{n}.json").write_bytes(data)
        request = json_format.Parse(line, ExportMetricsServiceRequest())
        (out / "bodies" / f"{n}.pb").write_bytes(request.SerializeToString())
    return points


def _array_line(t0: int, steps: range, resource: str) -> tuple[bytes, int]:
    """One metrics line of a 1,000-element array per key and step (the recorder's encoder)."""
    import numpy as np

    from markov_otel.otel.distributions import encode_lines

    rng = np.random.default_rng(steps.start)
    items = [
        (t0 + step * 1000, step, key, rng.normal(size=1000).astype(np.float32))
        for step in steps
        for key in KEYS
    ]
    ((line, points),) = encode_lines(items, resource, max_bytes=1 << 30)
    return line, points


def stored_count(store: Any, meta: dict[str, Any]) -> int:
    """The points (or, for `--arrays`, the distributions) the recording holds."""
    if meta.get("arrays"):
        return len(store.events_named(meta["recording_id"], "markov.distribution"))
    return int(store.get(meta["recording_id"])["points"])


def bodies_for(folder: Path, encoding: str, recording_id: str | None = None) -> list[bytes]:
    """The bodies of one encoding; with `recording_id`, moved to that recording."""
    suffix = ".pb" if encoding == "protobuf" else ".json"
    files = sorted((folder / "bodies").glob(f"*{suffix}"), key=lambda p: int(p.stem))
    bodies = [p.read_bytes() for p in files]
    if recording_id is not None:
        old = json.loads((folder / "meta.json").read_text())["recording_id"]
        assert len(old) == len(recording_id), "protobuf bodies are length-prefixed"
        bodies = [b.replace(old.encode(), recording_id.encode()) for b in bodies]
    return bodies


# -- one child: one tree, one database, one encoding, in-process ---------------------------------


def child(folder: Path, db: str, encoding: str, label: str, replay: bool = False) -> None:
    """Ingest every body through the app of the tree on PYTHONPATH; print the result as JSON:
    wall seconds, this process's CPU seconds, and (`replay`) the seconds of every body sent
    again without its Idempotency-Key, as a collector replaying the stored run sends it."""
    import asyncio

    import httpx

    from markov_otel.server.app import create_app

    meta = json.loads((folder / "meta.json").read_text())
    bodies = bodies_for(folder, encoding)
    ctype = PROTOBUF if encoding == "protobuf" else JSON
    app = create_app(db=db, tokens=[])

    async def run(keyed: bool) -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            elapsed = cpu = 0.0
            for n, body in enumerate(bodies):
                headers = {"Content-Type": ctype}
                if keyed:
                    headers["Idempotency-Key"] = f"{meta['recording_id']}:w:metrics:{n}"
                t0, c0 = time.perf_counter(), time.process_time()
                answer = await client.post("/v1/metrics", content=body, headers=headers)
                elapsed += time.perf_counter() - t0
                cpu += time.process_time() - c0
                if answer.status_code != 200 or b"rejected" in answer.content:
                    raise SystemExit(f"{label}: HTTP {answer.status_code} {answer.content[:300]!r}")
            return elapsed, cpu

    elapsed, cpu = asyncio.run(run(keyed=True))
    points = meta["points"] * len(bodies)
    stored = stored_count(app.state.store, meta)
    if stored != points:
        raise SystemExit(f"{label}: stored {stored} points, sent {points}")
    result = {"seconds": elapsed, "cpu": cpu, "points": points}
    if replay:
        result["replay_seconds"] = asyncio.run(run(keyed=False))[0]
        result["replay_stored"] = stored_count(app.state.store, meta) - points
    print(json.dumps(result))


def run_child(
    tree: Path, folder: Path, db: str, encoding: str, label: str, replay: bool = False
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, str(HERE / "bench_ingest.py"), "--child", str(folder), db, encoding]
    args += [label, *(["replay"] if replay else [])]
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tree, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- databases -----------------------------------------------------------------------------------


class Databases:
    """A fresh SQLite file or PostgreSQL schema for each run; schemas dropped at the end."""

    def __init__(self, work: Path, postgres: str | None) -> None:
        self.work, self.postgres = work, postgres
        self.schemas: list[str] = []

    def fresh(self, kind: str) -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            return f"sqlite:///{self.work / (name + '.db')}"
        import psycopg

        assert self.postgres is not None
        with psycopg.connect(self.postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        sep = "&" if "?" in self.postgres else "?"
        return f"{self.postgres}{sep}options=-csearch_path%3D{name}"

    def drop(self) -> None:
        if not self.schemas:
            return
        import psycopg

        assert self.postgres is not None
        with psycopg.connect(self.postgres, autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


# -- the real server over loopback, N workers ----------------------------------------------------


def start_server(db: str, workers: int, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import urllib.request

    port_file = work / f"port-{workers}"
    args = [sys.executable, "-m", "markov_otel.server", "--port", "0", "--db", db, "--open"]
    args += ["--port-file", str(port_file), "--workers", str(workers)]
    log = (work / f"server-{workers}.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=log, cwd=TREE)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / f"server-{workers}.log").read_text())
        if port_file.exists():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    return process, url
            except OSError:
                pass
        time.sleep(0.05)


def over_loopback(folder: Path, url: str, encoding: str, clients: int) -> dict[str, Any]:
    """`clients` threads, each POSTing every body to its own recording; points/s overall."""
    import requests

    meta = json.loads((folder / "meta.json").read_text())
    ctype = PROTOBUF if encoding == "protobuf" else JSON
    # Same length as the id the bodies carry: a protobuf body is length-prefixed.
    work = [(f"loop-{uuid.uuid4().hex[:11]}", n) for n in range(clients)]
    sets = {rid: bodies_for(folder, encoding, rid) for rid, _ in work}

    def send(rid: str) -> int:
        with requests.Session() as session:
            for n, body in enumerate(sets[rid]):
                while True:
                    headers = {"Content-Type": ctype, "Idempotency-Key": f"{rid}:w:metrics:{n}"}
                    answer = session.post(url + "/v1/metrics", data=body, headers=headers)
                    if answer.status_code != 503:  # the ingest gate: retry as the sender does
                        break
                    time.sleep(0.05)
                answer.raise_for_status()
            stored: int = session.get(f"{url}/api/v1/recordings/{rid}").json()["points"]
            return stored

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        stored = list(pool.map(send, [rid for rid, _ in work]))
    elapsed = time.perf_counter() - t0
    points = meta["points"] * len(sets[work[0][0]]) * clients
    if sum(stored) != points:
        raise SystemExit(f"stored {sum(stored)} points over loopback, sent {points}")
    return {"seconds": elapsed, "points": points}


# -- main ----------------------------------------------------------------------------------------


def in_process(args: argparse.Namespace, folder: Path, dbs: Databases) -> None:
    trees = [("this tree", TREE)]
    for spec in args.baseline:
        name, _, path = spec.partition("=")
        trees.append((name, Path(path).resolve()))
    best: dict[tuple[str, str, str, str], float] = {}  # (what, tree, db, encoding) -> best
    for _ in range(args.rounds):
        for kind in args.db.split(","):
            for encoding in args.encoding.split(","):
                for name, tree in trees:
                    label = f"{name}/{kind}/{encoding}"
                    result = run_child(tree, folder, dbs.fresh(kind), encoding, label, args.replay)
                    rate = result["points"] / result["seconds"]
                    cpu_ns = result["cpu"] / result["points"] * 1e9
                    _keep(best, ("rate", name, kind, encoding), rate)
                    _keep(best, ("cpu", name, kind, encoding), -cpu_ns)  # the least CPU
                    line = f"  {label:40} {rate:12,.0f} points/s, {cpu_ns:6,.0f} ns CPU a point"
                    if args.replay:
                        again = result["points"] / result["replay_seconds"]
                        _keep(best, ("replay", name, kind, encoding), again)
                        line += f"; keyless replay {again:,.0f} (stored {result['replay_stored']})"
                    print(line, file=sys.stderr)
    tables = [
        ("rate", "points/s"),
        ("cpu", "backend process CPU a point, ns (x: more CPU above 1)"),
    ]
    if args.replay:
        tables.append(("replay", "keyless replay of the stored run, points/s"))
    for what, title in tables:
        print(f"\n{title}")
        print(f"{'database':10} {'encoding':9} " + " ".join(f"{n:>14}" for n, _ in trees), end="")
        print("".join(f"  {'x ' + n:>12}" for n, _ in trees[1:]))
        for kind in args.db.split(","):
            for encoding in args.encoding.split(","):
                values = [abs(best[what, name, kind, encoding]) for name, _ in trees]
                line = f"{kind:10} {encoding:9} " + " ".join(f"{v:14,.0f}" for v in values)
                print(line + "".join(f"  {values[0] / v:11.2f}x" for v in values[1:]))


def _keep(best: dict[tuple[str, str, str, str], float], key: tuple[str, str, str, str],
          value: float) -> None:  # fmt: skip
    """The best round: the highest value (CPU goes in negated, so the least CPU is kept)."""
    best[key] = max(best.get(key, value), value)


def with_workers(args: argparse.Namespace, folder: Path, dbs: Databases) -> None:
    if not args.postgres:
        raise SystemExit("--workers needs PostgreSQL: --postgres URL or MARKOV_TEST_POSTGRES_URL")
    results: dict[tuple[int, str], float] = {}
    for _ in range(args.rounds):
        for workers in (int(w) for w in args.workers.split(",")):
            process, url = start_server(dbs.fresh("postgres"), workers, folder)
            try:
                for encoding in args.encoding.split(","):
                    result = over_loopback(folder, url, encoding, 2 * workers)
                    rate = result["points"] / result["seconds"]
                    results[workers, encoding] = max(results.get((workers, encoding), 0), rate)
                    print(
                        f"  {workers} worker(s) {encoding:9} {rate:12,.0f} points/s",
                        file=sys.stderr,
                    )
            finally:
                process.terminate()
                process.wait(30)
    one = {e: results.get((1, e)) for e in args.encoding.split(",")}
    print(f"{'workers':8} {'encoding':9} {'points/s':>12} {'x 1 worker':>11}")
    for (workers, encoding), rate in sorted(results.items()):
        base = one[encoding]
        ratio = f"{rate / base:10.2f}x" if base else ""
        print(f"{workers:<8} {encoding:9} {rate:12,.0f} {ratio}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], "replay" in sys.argv[6:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=8)
    parser.add_argument("--records", type=int, default=7500, help="records per body")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encoding", default="json,protobuf")
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("MARKOV_TEST_POSTGRES_URL"))
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--workers", help="e.g. 1,2: the real server over loopback")
    parser.add_argument("--arrays", action="store_true", help="recorded arrays, not numbers")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="then send every body again without its key (a collector replaying the run)",
    )
    args = parser.parse_args()
    if "postgres" in args.db and not args.postgres:
        args.db = ",".join(d for d in args.db.split(",") if d != "postgres")
        print("no PostgreSQL (--postgres URL): SQLite only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        rid = f"bench-{uuid.uuid4().hex[:10]}"
        points = build_bodies(folder, args.bodies, args.records, rid, args.arrays)
        meta = {"recording_id": rid, "points": points, "arrays": args.arrays}
        (folder / "meta.json").write_text(json.dumps(meta))
        size = (folder / "bodies" / "0.json").stat().st_size / 1e6
        proto = (folder / "bodies" / "0.pb").stat().st_size / 1e6
        print(
            f"{args.bodies} bodies x {points:,} points ({len(KEYS)} keys x {args.records:,} "
            f"records; {size:.1f} MB OTLP-JSON, {proto:.1f} MB protobuf), best of "
            f"{args.rounds} rounds, {os.cpu_count()} CPUs",
            flush=True,
        )
        dbs = Databases(folder, args.postgres)
        try:
            if args.workers:
                with_workers(args, folder, dbs)
            else:
                in_process(args, folder, dbs)
        finally:
            dbs.drop()


if __name__ == "__main__":
    main()
