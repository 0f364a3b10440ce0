"""The backend fixtures' promise: a server they let go (SIGTERM, no wait, so that its shutdown
overlaps the next test) never outlives the session, not even the one let go by its last test,
which only the session's end can wait for. An inner pytest session runs with the suite's own
leftovers check (tests/leftovers.py), which fails it for any process still running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
INNER = """
import os
from pathlib import Path


def test_first(backend):
    Path(os.environ["PIDS"]).open("a").write(f"{backend.process.pid}\\n")


def test_last(backend):  # let go last: only the session's end waits for it
    Path(os.environ["PIDS"]).open("a").write(f"{backend.process.pid}\\n")
"""


def test_servers_let_go_are_waited_for_before_the_session_ends(tmp_path: Path) -> None:
    """Two tests, each with the `backend` fixture: both pass, the leftovers check finds no
    server still running, and both servers are gone once the session is."""
    (tmp_path / "test_inner.py").write_text(INNER)
    pids = tmp_path / "pids"
    env = {
        **os.environ,
        "PIDS": str(pids),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    args += ["-p", "backend_fixture", "-p", "leftovers", f"--basetemp={tmp_path / 'inner'}"]
    args.append("test_inner.py")
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout and "leftovers" not in done.stdout, done.stdout[-3000:]
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(set(started)) == 2
    assert not any(psutil.pid_exists(pid) for pid in started)
