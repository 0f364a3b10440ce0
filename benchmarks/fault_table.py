"""The fault table of issue 6: each fault tried R times, points recorded vs stored, stop() time.

Run: python benchmarks/fault_table.py [--runs 3] [--seed 6]

Everything is real: the reference backend as a subprocess (tests/backend_fixture.py), the flaky
proxy of tests/flaky_proxy.py, training scripts in subprocesses (tests/recording_child.py)
killed with SIGKILL / SIGTERM, a 256 KiB tmpfs for the full disk (root only; skipped otherwise).
Not a test: it prints a markdown table and asserts nothing.

Columns: "recorded" is what must be kept — every point the training loop made, except for
kill -9, where it is what the run dir held after the kill (records still in memory die with the
process by design; the footnote says how many records the child had made). "stored" counts the
rows the backend (or, for the disk fault, the run dir) holds; "duplicates" counts rows whose
(key, step) appeared before. "max stop() s" is the longest stop() call; for SIGTERM, signal to
process exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from backend_fixture import Backend, online_recorder  # noqa: E402  (tests/ is not a package)
from flaky_proxy import FlakyProxy  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.cli.main import main as mkv  # noqa: E402
from markov_otel.shipping.runs import points  # noqa: E402
from markov_otel.shipping.spool import Spool  # noqa: E402

CHILD = REPO / "tests" / "recording_child.py"
KEYS = ("loss", "acc")


@dataclass
class Outcome:
    recorded: int
    stored: int
    duplicates: int
    stop_s: float | None = None
    note: str = ""


@dataclass
class Row:
    fault: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: str = ""


@contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def backend_counts(server: Backend, run_id: str) -> tuple[int, int]:
    """(rows, duplicate rows) the backend holds for the run's keys."""
    rows = dupes = 0
    for key in KEYS:
        steps = [r["step"] for r in server.records(run_id, key, timeout=120)]
        rows += len(steps)
        dupes += len(steps) - len(set(steps))
    return rows, dupes


def disk_counts(run_dir: Path) -> tuple[int, int]:
    seen = [(p.key, p.step) for p in points(Spool(run_dir))]
    return len(seen), len(seen) - len(set(seen))


def sync(server: Backend, run_id: str) -> None:
    env = environment(MARKOV_ENDPOINT=server.url, MARKOV_API_KEY=server.token)
    with env, redirect_stdout(sys.stderr):  # keep stdout for the table
        if mkv(["sync", run_id]) != 0:
            raise RuntimeError(f"mkv sync {run_id} failed")


def record(recorder: ExperimentRecorder, start: int, stop: int) -> None:
    for i in range(start, stop):
        recorder.add_record({"loss": 1.0 / (i + 1), "acc": i})


def timed_stop(recorder: ExperimentRecorder) -> float:
    began = time.monotonic()
    recorder.stop()
    return time.monotonic() - began


def child(mode: str, n: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )


def next_word(proc: subprocess.Popen[str], word: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        head, _, rest = line.strip().partition(" ")
        if head == word:
            return rest
    raise RuntimeError(f"child ended before printing {word!r}")


# -- the faults -----------------------------------------------------------------------------------


def kill9(work: Path, rng: random.Random) -> Outcome:
    proc = child("kill9", 200_000)
    try:
        run_id = next_word(proc, "id")
        next_word(proc, "checkpoint")
        made = int(next_word(proc, "progress"))
        time.sleep(rng.uniform(0.0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    made = max([made] + [int(w) for w in _words(out, "progress")])
    spooled, _ = disk_counts(Path(os.environ["MARKOV_DIR"]) / run_id)
    server = Backend(work / "backend")
    try:
        sync(server, run_id)
        stored, dupes = backend_counts(server, run_id)
    finally:
        server.stop()
    note = f"made >= {made} records, {spooled // len(KEYS)} on disk at the kill"
    return Outcome(spooled, stored, dupes, None, note)


def _words(out: str, word: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith(word + " ")]


def backend_down(work: Path, rng: random.Random) -> Outcome:
    n = 3000
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    recorder = online_recorder(dead, "down", sync_data_timeout=1.5)
    recorder.start()
    record(recorder, 0, n)
    stop_s = timed_stop(recorder)
    server = Backend(work / "backend")
    try:
        sync(server, recorder.recording_id)
        stored, dupes = backend_counts(server, recorder.recording_id)
    finally:
        server.stop()
    return Outcome(2 * n, stored, dupes, stop_s)


def backend_restarted(work: Path, rng: random.Random) -> Outcome:
    n = 4000
    server = Backend(work / "backend")
    try:
        recorder = online_recorder(server.url, server.token)
        recorder.start()
        record(recorder, 0, n // 2)
        deadline = time.monotonic() + 20
        while backend_counts(server, recorder.recording_id)[0] == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing reached the backend")
            time.sleep(0.05)
        server.kill()
        record(recorder, n // 2, 3 * n // 4)
        time.sleep(rng.uniform(0.2, 0.8))
        server.restart()
        record(recorder, 3 * n // 4, n)
        stop_s = timed_stop(recorder)
        stored, dupes = backend_counts(server, recorder.recording_id)
    finally:
        server.stop()
    return Outcome(2 * n, stored, dupes, stop_s)


def flaky(work: Path, rng: random.Random) -> Outcome:
    n = 3000
    faults = {"503": 0.05, "429": 0.04, "reset": 0.04, "lost": 0.04, "stall": 0.04}
    server = Backend(work / "backend")
    try:
        with FlakyProxy(server.url, faults=faults, seed=rng.randrange(1 << 30), stall=0.8) as px:
            recorder = online_recorder(
                px.url, server.token, register_batch_timeout=0.5, batch_size=50
            )
            recorder.start()
            record(recorder, 0, n)
            stop_s = timed_stop(recorder)
        stored, dupes = backend_counts(server, recorder.recording_id)
        hit = sum(px.counts[k] for k in faults)
    finally:
        server.stop()
    return Outcome(2 * n, stored, dupes, stop_s, f"{hit} faulty answers")


class Said(logging.Handler):
    """Counts markov_otel's messages about the run dir it could not write."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "cannot write" in record.getMessage()


def disk_full(work: Path, rng: random.Random) -> Outcome:
    n = 10_000
    said = Said()
    logging.getLogger("markov_otel").addHandler(said)
    disk = work / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        recorder = ExperimentRecorder(
            "fault-table",
            recording_mode=RecordingMode.OFFLINE,
            markov_dir=str(disk),
            batch_size=200,
            batch_processing_interval=0.05,
            sync_data_timeout=10.0,
        )
        recorder.start()
        record(recorder, 0, n)
        time.sleep(rng.uniform(0.2, 0.6))  # the flusher meets the full disk
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        stop_s = timed_stop(recorder)
        stored, dupes = disk_counts(recorder.run_dir)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        logging.getLogger("markov_otel").removeHandler(said)
    return Outcome(2 * n, stored, dupes, stop_s, f"disk trouble said {said.count}x")


def sigterm(work: Path, rng: random.Random) -> Outcome:
    proc = child("sigterm")
    try:
        run_id = next_word(proc, "id")
        next_word(proc, "ready")
        for _ in range(rng.randint(2, 6)):
            next_word(proc, "checkpoint")
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        exit_s = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
    (made,) = [int(w) for w in _words(out, "made")]
    stored, dupes = disk_counts(Path(os.environ["MARKOV_DIR"]) / run_id)
    return Outcome(2 * made, stored, dupes, exit_s, f"exit code {proc.returncode}, on disk")


FAULTS: list[tuple[str, Callable[[Path, random.Random], Outcome], bool]] = [
    ("kill -9 mid-loop, then mkv sync", kill9, False),
    ("backend down, then mkv sync", backend_down, False),
    ("backend killed and restarted mid-run", backend_restarted, False),
    ("flaky proxy (503/429/reset/lost/stall ~21%)", flaky, False),
    ("disk full mid-run (256 KiB tmpfs, then 16 MiB)", disk_full, True),
    ("SIGTERM mid-loop", sigterm, False),
]


def run_fault(name: str, fn: Callable[[Path, random.Random], Outcome], runs: int, seed: int) -> Row:
    row = Row(name)
    for index in range(runs):
        with tempfile.TemporaryDirectory(prefix="fault-table-") as tmp:
            work = Path(tmp)
            env = {
                "MARKOV_DIR": str(work / "runs"),
                "MARKOV_CONFIG": str(work / "config.json"),
                "MARKOV_CAPTURE_ENVIRONMENT": "0",
            }
            with environment(**env):
                row.outcomes.append(fn(work, random.Random(seed * 1000 + index)))
    return row


def table(rows: list[Row]) -> str:
    out = [
        "| fault | runs | points recorded | points stored | duplicates | max stop() s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.skipped:
            out.append(f"| {row.fault} | 0 | — | — | — | — ({row.skipped}) |")
            continue
        got = row.outcomes
        stops = [o.stop_s for o in got if o.stop_s is not None]
        out.append(
            f"| {row.fault} | {len(got)} | {sum(o.recorded for o in got):,} | "
            f"{sum(o.stored for o in got):,} | {sum(o.duplicates for o in got)} | "
            f"{f'{max(stops):.2f}' if stops else '—'} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="tries per fault (R)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--only", help="run only faults whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="show markov_otel's log")
    args = parser.parse_args()
    quiet = logging.getLogger("markov_otel")
    quiet.setLevel(logging.WARNING)
    if args.verbose:
        logging.basicConfig()
    else:
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
    rows = []
    for name, fn, needs_root in FAULTS:
        if args.only and args.only not in name:
            continue
        if needs_root and os.geteuid() != 0:
            rows.append(Row(name, skipped="needs root to mount a tmpfs"))
            continue
        began = time.monotonic()
        rows.append(run_fault(name, fn, args.runs, args.seed))
        notes = "; ".join(o.note for o in rows[-1].outcomes if o.note)
        print(f"{name}: {time.monotonic() - began:.1f} s  {notes}", file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
