"""Artifact upload throughput: our chunked, resumable upload against a plain `curl` PUT.

Run: python benchmarks/bench_artifacts.py [--mib 256] [--rounds 3]

One random file of `--mib` MiB. Baseline: `curl -T FILE` to a minimal loopback server (the
standard library's http.server, streaming the body to a file: no hashing, no parts). Ours: the
reference backend (`python -m markov_otel.server`, SQLite under a temp dir) taking the same
file from a run dir through `Uploads` (GET the digest, PUT 8 MiB parts, commit: the server
joins and SHA-256-hashes the parts, then names it under the recording). Both go over loopback
in the same rounds; the best round of each counts, and the figure is the ratio ours/curl.
The backend's blob dir is emptied between rounds, so every round uploads all bytes.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
sys.path.insert(0, str(TREE))
sys.path.insert(0, str(TREE / "tests"))

from backend_fixture import Backend  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.shipping.spool import Spool  # noqa: E402
from markov_otel.shipping.transport import BackendClient, Target  # noqa: E402
from markov_otel.shipping.uploads import Uploads  # noqa: E402


class _Sink(http.server.BaseHTTPRequestHandler):
    """PUT: stream the body to a file, answer 201 (what a plain upload endpoint does)."""

    target: Path

    def do_PUT(self) -> None:
        left = int(self.headers["Content-Length"])
        with self.target.open("wb") as out:
            while left:
                chunk = self.rfile.read(min(1 << 20, left))
                out.write(chunk)
                left -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def curl_seconds(path: Path, workdir: Path) -> float:
    _Sink.target = workdir / "sink.bin"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/upload"
        began = time.perf_counter()
        subprocess.run(["curl", "-sS", "-f", "-T", str(path), url], check=True)
        return time.perf_counter() - began
    finally:
        server.shutdown()
        server.server_close()


def ours_seconds(run_dir: Path, backend: Backend) -> float:
    shutil.rmtree(backend.workdir / "backend.db.artifacts" / "blobs", ignore_errors=True)
    spool = Spool(run_dir)
    spool.write_acks({}, "artifact-acks.json")
    target = Target(backend.url, backend.headers)
    client = BackendClient(target, 120.0)
    client.call("POST", "/api/v1/recordings", json=_registration(spool))
    uploads = Uploads(spool, client, backend.url)
    began = time.perf_counter()
    while uploads.pump(lambda: 120.0, lambda: False):
        pass  # a round uploads for a slice of time, then the sender's points go
    took = time.perf_counter() - began
    client.close()
    assert not uploads.unsent(), "the upload did not finish"
    print(f"  round: {uploads.sent_bytes} bytes uploaded in {took:.2f} s", file=sys.stderr)
    return took


def _registration(spool: Spool) -> dict[str, object]:
    return {"recording_id": spool.recording_id(), "name": "bench-artifacts"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        work = Path(tmp)
        source = work / "model.bin"
        with source.open("wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(1 << 20))
        os.environ["MARKOV_DIR"] = str(work / "runs")
        with ExperimentRecorder(
            "bench", recording_mode=RecordingMode.OFFLINE, system_metrics=False
        ) as recorder:
            recorder.add_artifact(source, kind="model")
        backend = Backend(work / "backend")
        try:
            curl, ours = [], []
            for _ in range(args.rounds):
                curl.append(curl_seconds(source, work))
                ours.append(ours_seconds(recorder.run_dir, backend))
        finally:
            backend.stop()
    mib = args.mib
    print(f"file: {mib} MiB, best of {args.rounds} rounds")
    print(f"curl -T to http.server: {min(curl):.2f} s  {mib / min(curl):.0f} MiB/s")
    print(f"markov_otel Uploads:    {min(ours):.2f} s  {mib / min(ours):.0f} MiB/s")
    print(f"ratio ours/curl (time): {min(ours) / min(curl):.2f}")


if __name__ == "__main__":
    main()
