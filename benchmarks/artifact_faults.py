"""The artifact fault table: byte counts and digests of files that met a fault on their way.

Run (as root for the disk-full row: it mounts a tmpfs): python benchmarks/artifact_faults.py

Rows: `mkv sync` killed by SIGKILL mid-upload, then run again; the backend down for the whole
run, restarted, then `mkv sync`; the same checkpoint in two runs; the run dir's disk full during
the copy, then space back and `mkv sync`. Each row prints the source's bytes and SHA-256, what
the backend holds (bytes on its disk, digest re-read from there) and the bytes each upload sent.
The same scenarios are asserted in tests/test_artifacts.py; this prints the numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE))
sys.path.insert(0, str(TREE / "tests"))

from backend_fixture import Backend, online_recorder  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.cli.main import main  # noqa: E402

SYNC = "from markov_otel.cli.main import main; import sys; sys.exit(main(['sync', sys.argv[1]]))"


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def source(path: Path, mib: int) -> Path:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))
    return path


def use(backend: Backend) -> Backend:
    """`mkv sync` (here and in a child) sends to this backend."""
    os.environ["MARKOV_ENDPOINT"], os.environ["MARKOV_API_KEY"] = backend.url, backend.token
    return backend


def held(backend: Backend) -> list[Path]:
    found = (backend.workdir / "backend.db.artifacts" / "blobs").rglob("*")
    return sorted(p for p in found if p.is_file() and not p.name.startswith("."))


def sync(run_id: str) -> int:
    """`mkv sync RUN` in this process; the artifact bytes it uploaded."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["sync", run_id]) == 0
    for line in out.getvalue().splitlines():
        if "bytes of artifacts uploaded" in line:
            return int(line.split(" bytes of artifacts uploaded")[0].rsplit(" ", 1)[-1])
    return 0


def offline_with(path: Path) -> ExperimentRecorder:
    with ExperimentRecorder("faults", recording_mode=RecordingMode.OFFLINE) as recorder:
        recorder.add_artifact(path, kind="checkpoint")
    return recorder


def row(name: str, src: Path, backend: Backend, sent: str) -> None:
    blobs = held(backend)
    on_disk = sum(p.stat().st_size for p in blobs)
    same = [digest(p) for p in blobs] == [digest(src)]
    print(
        f"| {name} | {src.stat().st_size} | {digest(src)[:16]}… | {len(blobs)} file, {on_disk} "
        f"bytes | {'same' if same else 'DIFFERENT'} | {sent} |"
    )


def kill_mid_upload(work: Path) -> None:
    src = source(work / "big.bin", 96)
    backend = use(Backend(work / "b1"))
    try:
        recorder = offline_with(src)
        parts = backend.workdir / "backend.db.artifacts" / "parts" / digest(src)
        env = {**os.environ, "PYTHONPATH": str(TREE)}
        child = subprocess.Popen([sys.executable, "-c", SYNC, recorder.recording_id], env=env)
        while len(list(parts.glob("[0-9]*"))) < 3 and child.poll() is None:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        before = sum(int(p.read_text()) for p in parts.glob("[0-9]*"))
        resent = sync(recorder.recording_id)
        row("kill -9 mid-upload, then mkv sync", src, backend,
            f"{before} before the kill, {resent} after")  # fmt: skip
    finally:
        backend.stop()


def backend_restart(work: Path) -> None:
    src = source(work / "ckpt.bin", 12)
    backend = use(Backend(work / "b2"))
    try:
        backend.kill()
        with online_recorder(backend.url, backend.token, sync_data_timeout=2.0) as recorder:
            recorder.add_artifact(src, kind="checkpoint")
        backend.restart()
        sent = sync(recorder.recording_id)
        again = sync(recorder.recording_id)
        row("backend down, restarted, mkv sync twice", src, backend, f"{sent}, then {again}")
    finally:
        backend.stop()


def two_runs(work: Path) -> None:
    src = source(work / "same.bin", 10)
    backend = use(Backend(work / "b3"))
    try:
        first = sync(offline_with(src).recording_id)
        second = sync(offline_with(src).recording_id)
        row("same file in two runs", src, backend, f"{first}, then {second}")
    finally:
        backend.stop()


def disk_full(work: Path) -> None:
    small = work / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    backend = use(Backend(work / "b4"))
    try:
        os.environ["MARKOV_DIR"] = str(small)
        src = source(work / "full.bin", 3)
        recorder = offline_with(src)
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        row("disk full during the copy, then mkv sync", src, backend,
            f"{sync(recorder.recording_id)}")  # fmt: skip
    finally:
        backend.stop()
        subprocess.run(["umount", "-l", str(small)], check=False)


def main_table() -> None:
    print("| fault | source bytes | sha256 | backend holds | digest | bytes uploaded |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="artifact-faults-") as tmp:
        work = Path(tmp)
        os.environ["MARKOV_DIR"] = str(work / "runs")
        os.environ["MARKOV_CAPTURE_ENVIRONMENT"] = "0"
        for scenario in (kill_mid_upload, backend_restart, two_runs):
            scenario(work)
        if os.geteuid() == 0:
            disk_full(work)


if __name__ == "__main__":
    main_table()
