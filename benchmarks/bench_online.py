"""End-to-end ONLINE throughput: from the first add_record to the rows in the backend's SQLite.

Run: python benchmarks/bench_online.py [--records 1000000] [--keys 4] [--batch-size 1000]

Starts the reference backend as a subprocess on 127.0.0.1:0 with a SQLite file (as the test
fixture does), records `--records` records of `--keys` keys online, and stops the clock when
the backend's recording counts every point (GET /api/v1/recordings/{id}, polled); then it checks
GET .../records?key=K returns exactly N per key. The baseline, measured in the same run, is a
plain loop building the same dicts; the ratio says how many such loops the whole trip costs.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import requests

from markov_otel import ExperimentRecorder, RecordingMode

KEY_NAMES = ("loss", "accuracy", "lr", "grad_norm", "val_loss", "val_accuracy", "tokens", "ppl")
TOKEN = "bench-token"


def start_backend(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m markov_otel.server --port 0` on a SQLite file; (process, base URL)."""
    port_file = workdir / "port"
    args = [sys.executable, "-m", "markov_otel.server", "--port", "0"]
    args += ["--port-file", str(port_file), "--db", f"sqlite:///{workdir / 'bench.db'}"]
    args += ["--token", TOKEN]
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=log, cwd=workdir)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"backend did not start: {(workdir / 'server.log').read_text()}")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port_file.read_text().strip()}"
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def build_only(records: int, keys: tuple[str, ...]) -> float:
    """Seconds for the baseline: a plain loop building the same dicts, nothing kept."""
    t0 = time.perf_counter()
    for i in range(records):
        record = dict.fromkeys(keys, 1.0 / (i + 1))
        record[keys[0]] = i * 1e-6
    return time.perf_counter() - t0


def online_run(
    url: str, base: Path, records: int, keys: tuple[str, ...], batch_size: int
) -> dict[str, Any]:
    """Record online; seconds until the backend holds every point, and where the time went."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    recorder = ExperimentRecorder(
        "bench-online",
        recording_mode=RecordingMode.ONLINE,
        endpoint=url,
        api_key=TOKEN,
        markov_dir=str(base),
        batch_size=batch_size,
        sync_data_timeout=600,
    )
    recorder.start()
    rid = recorder.recording_id
    expected = records * len(keys)
    add = recorder.add_record
    t0 = time.perf_counter()
    for i in range(records):
        record = dict.fromkeys(keys, 1.0 / (i + 1))
        record[keys[0]] = i * 1e-6
        add(record)
    t_loop = time.perf_counter()
    stored = 0
    while stored < expected:
        time.sleep(0.02)
        stored = session.get(f"{url}/api/v1/recordings/{rid}", timeout=30).json()["points"]
    t_stored = time.perf_counter()
    recorder.stop()
    t_stop = time.perf_counter()
    counts = {
        key: len(session.get(f"{url}/api/v1/recordings/{rid}/records", params={"key": key}).json())
        for key in keys
    }
    return {
        "loop": t_loop - t0,
        "end_to_end": t_stored - t0,
        "stop": t_stop - t_stored,
        "stored": stored,
        "counts": counts,
        "spool_bytes": (recorder.run_dir / "metrics.jsonl").stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=4, choices=range(1, len(KEY_NAMES) + 1))
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    keys = KEY_NAMES[: args.keys]
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        work = Path(tmp)
        os.environ["MARKOV_CONFIG"] = str(work / "config.json")  # never the user's settings
        os.environ["MARKOV_CAPTURE_ENVIRONMENT"] = "0"  # pip inspect is not part of the path
        process, url = start_backend(work)
        try:
            baseline = build_only(args.records, keys)
            result = online_run(url, work / "runs", args.records, keys, args.batch_size)
        finally:
            process.terminate()
            process.wait(30)
    points = args.records * len(keys)
    e2e = result["end_to_end"]
    exact = all(n == args.records for n in result["counts"].values())
    print(
        f"records {args.records:,} x {len(keys)} keys = {points:,} points, batch_size "
        f"{args.batch_size}, SQLite, loopback, {os.cpu_count()} CPUs"
    )
    print(f"baseline (build the dicts only)   {baseline:8.3f} s")
    print(f"add_record loop (training thread) {result['loop']:8.3f} s")
    print(
        f"first add_record -> all rows      {e2e:8.3f} s   {points / e2e:12,.0f} points/s "
        f"({args.records / e2e:,.0f} records/s)"
    )
    print(f"ratio end-to-end / baseline       {e2e / baseline:8.1f} x")
    print(f"stop() afterwards                 {result['stop']:8.3f} s")
    print(
        f"spool {result['spool_bytes'] / 1e6:.1f} MB; GET records per key: {result['counts']} "
        f"({'exactly N' if exact else 'MISMATCH'})"
    )


if __name__ == "__main__":
    main()
