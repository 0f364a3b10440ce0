"""Peak memory of the backend under concurrent large ingest bodies, per --max-concurrent-ingest.

Run: python benchmarks/bench_server_memory.py [--bodies 6] [--body-mb 32] [--bounds 1,4,6]
     [--encoding protobuf|json] [--pythonpath DIR]

For each bound, starts the reference backend (`python -m markov_otel.server`, SQLite file,
`--max-concurrent-ingest B`, and `--max-body-bytes` just above the body), then sends `--bodies`
ExportMetricsServiceRequest bodies (protobuf, or OTLP-JSON as the recorder sends) of about
`--body-mb` MB at once, one thread each,
each retrying on 503 after Retry-After as the recorder's sender does, until all are stored.
Reports the server's peak resident memory (VmHWM from /proc) and its ratio to the run whose
bound admits every body at once (the unbounded baseline, measured in the same run), and the
wall time. With --pythonpath the server runs that checkout's code instead (e.g. an older one,
which has no bound: then only its unbounded row is measured). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from markov_otel.otel.encoding import proto_to_otlp_json

TOKEN = "bench-token"
CHUNK_POINTS = 10_000


def protobuf_body(recording_id: str, megabytes: float) -> bytes:
    """About `megabytes` MB of one recording's gauge points: a 10k-point request, repeated.

    Concatenated protobuf messages parse as one with the repeated fields appended, so the body
    is n resources of 10k points each, as n batches of one run would be.
    """
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(
        KeyValue(key="markov.recording.id", value=AnyValue(string_value=recording_id))
    )
    metric = rm.scope_metrics.add().metrics.add(name="loss")
    for step in range(CHUNK_POINTS):
        dp = metric.gauge.data_points.add(time_unix_nano=1_700_000_000_000_000_000 + step)
        dp.as_double = step / 7
        dp.attributes.append(KeyValue(key="markov.step", value=AnyValue(int_value=step)))
    chunk = request.SerializeToString()
    return chunk * max(1, int(megabytes * 1e6 / len(chunk)))


def json_body(recording_id: str, megabytes: float) -> bytes:
    """The same points as OTLP-JSON: the 10k-point resource, repeated in resourceMetrics."""
    chunk = ExportMetricsServiceRequest.FromString(protobuf_body(recording_id, 0))
    resource = json.loads(proto_to_otlp_json(chunk))["resourceMetrics"][0]
    one = len(json.dumps(resource))
    doc = {"resourceMetrics": [resource] * max(1, int(megabytes * 1e6 / one))}
    return json.dumps(doc, separators=(",", ":")).encode()


def start(workdir: Path, bound: int, limit: int, pythonpath: str | None) -> tuple[Any, str]:
    """The backend process and its URL."""
    port_file = workdir / "port"
    args = [sys.executable, "-m", "markov_otel.server", "--port", "0", "--token", TOKEN]
    args += ["--port-file", str(port_file), "--db", f"sqlite:///{workdir / 'bench.db'}"]
    args += ["--max-body-bytes", str(limit)]
    if pythonpath is None:
        args += ["--max-concurrent-ingest", str(bound)]
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=log, cwd=workdir, env=env)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"backend did not start: {(workdir / 'server.log').read_text()}")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port_file.read_text().strip()}"
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.05)


def memory_kb(pid: int, field: str) -> int:
    """A VmRSS/VmHWM line of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def send_until_stored(url: str, body: bytes, refusals: list[int]) -> None:
    """POST until 200, sleeping Retry-After on each 503 (as the recorder's sender does)."""
    ctype = "application/json" if body[:1] == b"{" else "application/x-protobuf"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}
    headers["Idempotency-Key"] = uuid.uuid4().hex
    while True:
        answer = requests.post(url + "/v1/metrics", data=body, headers=headers, timeout=600)
        if answer.status_code == 200:
            return
        if answer.status_code != 503:
            raise SystemExit(f"unexpected {answer.status_code}: {answer.text[:200]}")
        refusals.append(1)
        time.sleep(float(answer.headers.get("Retry-After", "1")))


def measure(bound: int, bodies: list[bytes], pythonpath: str | None) -> tuple[int, int, int, float]:
    """(idle RSS kB, peak RSS kB, 503s, seconds) of one backend taking every body."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        process, url = start(Path(tmp), bound, len(bodies[0]) + 1024, pythonpath)
        try:
            idle = memory_kb(process.pid, "VmRSS")
            refusals: list[int] = []
            threads = [
                threading.Thread(target=send_until_stored, args=(url, body, refusals))
                for body in bodies
            ]
            t0 = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - t0
            return idle, memory_kb(process.pid, "VmHWM"), len(refusals), seconds
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=6)
    parser.add_argument("--body-mb", type=float, default=32.0)
    parser.add_argument("--bounds", default="1,4,6", help="--max-concurrent-ingest values")
    parser.add_argument("--encoding", choices=["protobuf", "json"], default="protobuf")
    parser.add_argument("--pythonpath", help="run the server from this checkout instead")
    args = parser.parse_args()
    build = protobuf_body if args.encoding == "protobuf" else json_body
    bodies = [build(uuid.uuid4().hex, args.body_mb) for _ in range(args.bodies)]
    size = len(bodies[0]) / 1e6
    print(f"{args.bodies} concurrent {args.encoding} bodies of {size:.1f} MB each")
    bounds = [args.bodies] if args.pythonpath else sorted(int(b) for b in args.bounds.split(","))
    rows = {bound: measure(bound, bodies, args.pythonpath) for bound in bounds}
    baseline = rows[max(bounds)][1]
    print(f"{'bound':>6} {'idle MB':>8} {'peak MB':>8} {'vs unbounded':>13} {'503s':>5} {'s':>6}")
    for bound, (idle, peak, refused, seconds) in rows.items():
        label = "none" if args.pythonpath else str(bound)
        print(
            f"{label:>6} {idle / 1024:8.0f} {peak / 1024:8.0f} {peak / baseline:13.2f} "
            f"{refused:5d} {seconds:6.1f}"
        )


if __name__ == "__main__":
    main()
