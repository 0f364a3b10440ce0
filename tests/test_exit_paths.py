"""Exit paths (issue 6): sys.exit and exceptions inside `with`, SIGTERM; status and every point.

Exit without stop() and SIGKILL are in test_exit.py. Each case runs tests/recording_child.py in a
subprocess and reads the run dir back: recording.json, the last batch's `markov.status`, points.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_files import last_resource, points, recording

CHILD = Path(__file__).with_name("recording_child.py")
N = 5000


def run_child(mode: str, n: int = N) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), mode, str(n)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,  # stop() never hangs
    )


@contextlib.contextmanager
def running_child(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`python *args` with its stdin, stdout and stderr piped; killed if still running when the
    block ends (a failed assertion must not leave it behind)."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def said(out: str, word: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(word + " ")]


def assert_run(run_dir: Path, status: str, n: int) -> None:
    """recording.json and the last batch agree on `status`; steps 0..n-1 of both keys, once."""
    assert recording(run_dir)["status"] == status
    assert last_resource(run_dir)["markov.status"] == status
    got = points(run_dir)
    for key in ("loss", "acc"):
        assert [p.step for p in got if p.key == key] == list(range(n)), key
    assert len(got) == 2 * n


@pytest.mark.parametrize(
    ("mode", "code", "status"),
    [("exit0", 0, "finished"), ("exit3", 3, "failed"), ("raise", 1, "failed")],
)
def test_leaving_with_block(isolated: Path, mode: str, code: int, status: str) -> None:
    """sys.exit(0) → finished; sys.exit(3) and an escaping exception → failed; all points kept."""
    done = run_child(mode)
    assert done.returncode == code, done.stderr
    (run_id,) = said(done.stdout, "id")
    assert said(done.stdout, "checkpoint") == [str(N)]
    assert ("RuntimeError: the training step blew up" in done.stderr) == (mode == "raise")
    assert_run(isolated / run_id, status, N)


@pytest.mark.slow
def test_sigterm_marks_terminated_and_keeps_every_record(isolated: Path) -> None:
    """SIGTERM mid-loop: exit code 143, status terminated, every record up to the kill on disk."""
    with running_child(str(CHILD), "sigterm") as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().split()[1]
        assert proc.stdout.readline().strip() == "ready"
        checkpoints = [int(proc.stdout.readline().split()[1]) for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    checkpoints += [int(c) for c in said(out, "checkpoint")]
    run = isolated / run_id
    assert recording(run)["status"] == "terminated"
    assert last_resource(run)["markov.status"] == "terminated"
    got = points(run)
    (made,) = [int(m) for m in said(out, "made")]
    assert made >= checkpoints[-1]
    stored = len([p for p in got if p.key == "acc"])
    assert made <= stored <= made + 1  # + the add_record the signal interrupted, if it got in
    for key in ("loss", "acc"):
        assert [p.step for p in got if p.key == key] == list(range(stored)), key


STOPPED_THEN_WAITING = """
import sys
from markov_otel import ExperimentRecorder
recorder = ExperimentRecorder(name="stopped", hyper_parameters={})
recorder.start()
recorder.add_record({"loss": 1.0})
recorder.stop()
print("stopped", flush=True)
sys.stdin.read()
"""


def test_sigterm_after_every_recorder_stopped_kills_as_without_us(isolated: Path) -> None:
    """Once its recorders have stopped, a process dies of SIGTERM (as a Pool's terminate()
    expects of its workers), not of the SystemExit(143) a running recorder turns it into."""
    with running_child("-c", STOPPED_THEN_WAITING) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
