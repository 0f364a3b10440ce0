"""What one read request costs the server, in CPU, under each of uvicorn's HTTP parsers.

Run: python benchmarks/bench_request_cost.py [--http h11,httptools] [--requests 20000]
         [--connections 50] [--rounds 2]

For each parser, a fresh server (SQLite) with one recording of 4 keys x 1,000 points, then
`--requests` requests over `--connections` keep-alive connections (bench_mixed_load.py's raw
HTTP/1.1 client), of three kinds in turn: a live page's poll of the recording with its ETag
(a 304), a live page's `since_step=` series read (a small 200), and /healthz (no database).
The figure is the server's CPU microseconds per request (user + system, from /proc): what the
event loop and the read lane spend on it, whatever share of a shared machine the server gets;
the ratio is to the first parser of the same round. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_mixed_load import (  # noqa: E402
    KEYS,
    TREE,
    Connection,
    cpu_seconds,
    probe_body,
    series_path,
    start_server,
)

KINDS = ("poll 304", "series since", "healthz")


def seed(port: int) -> tuple[str, str]:
    """A recording of 4 keys x 1,000 points; its id and ETag."""
    import http.client
    import uuid

    rid = uuid.uuid4().hex
    doc = json.loads(probe_body(rid, 0))
    metric = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    point = metric["gauge"]["dataPoints"][0]
    metrics = []
    for key in KEYS:
        points = []
        for step in range(1000):
            attrs = [{"key": "markov.step", "value": {"intValue": str(step)}}]
            points.append({**point, "attributes": attrs, "asDouble": step * 0.5})
        metrics.append({"name": key, "gauge": {"dataPoints": points}})
    doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"] = metrics
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
    conn.request("POST", "/v1/metrics", json.dumps(doc).encode(), headers)
    assert conn.getresponse().read() is not None
    conn.request(
        "GET", f"/api/v1/recordings/{rid}", headers={"Authorization": headers["Authorization"]}
    )
    answer = conn.getresponse()
    answer.read()
    return rid, answer.getheader("etag") or ""


async def load(port: int, rid: str, etag: str, kind: str, total: int, conns: int) -> dict[str, int]:
    """`total` requests of `kind` over `conns` connections; their statuses, counted."""
    path = {
        "poll 304": f"/api/v1/recordings/{rid}",
        "series since": series_path(rid, "loss", 990),
        "healthz": "/healthz",
    }[kind]
    tally: dict[str, int] = {}
    left = [total]

    async def one() -> None:
        conn = Connection(port)
        while left[0] > 0:
            left[0] -= 1
            status, _, _ = await conn.get(path, etag if kind == "poll 304" else None)
            tally[str(status)] = tally.get(str(status), 0) + 1

    await asyncio.gather(*(one() for _ in range(conns)))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="h11,httptools")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    parsers = args.http.split(",")
    print(
        f"{args.requests:,} requests a kind over {args.connections} connections; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'round':6} {'parser':10} " + " ".join(f"{k + ' us/req':>20}" for k in KINDS))
    with tempfile.TemporaryDirectory(prefix="bench-request-") as tmp:
        work = Path(tmp)
        for round_ in range(1, args.rounds + 1):
            first: dict[str, float] = {}
            for http in parsers:
                server, port = start_server(TREE, f"sqlite:///{work}/{http}{round_}.db", work, http)
                try:
                    rid, etag = seed(port)
                    cells = []
                    for kind in KINDS:
                        before = cpu_seconds(server.pid)
                        tally = asyncio.run(
                            load(port, rid, etag, kind, args.requests, args.connections)
                        )
                        us = 1e6 * (cpu_seconds(server.pid) - before) / args.requests
                        first.setdefault(kind, us)
                        ok = "" if set(tally) <= {"200", "304"} else f" {tally}"
                        cells.append(f"{us:9.0f} ({us / first[kind]:4.2f}){ok}")
                    print(
                        f"#{round_:<5} {http:10} " + " ".join(f"{c:>20}" for c in cells), flush=True
                    )
                finally:
                    server.terminate()
                    server.wait(30)


if __name__ == "__main__":
    main()
