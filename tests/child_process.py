"""Driving tests/recording_child.py: start it, read what it says, end it (SIGKILL if need be)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).with_name("recording_child.py")


def start(mode: str, n: int = 0, *more: str, **env: str) -> subprocess.Popen[str]:
    """`recording_child.py MODE N [MORE…]` with stdout and stderr piped, the test's
    environment and `env` on top."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(n), *more],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def said_next(proc: subprocess.Popen[str], word: str) -> str:
    """The rest of the child's next stdout line that starts with `word` (others skipped)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        head, _, rest = line.strip().partition(" ")
        if head == word:
            return rest
    raise AssertionError(f"the child ended before saying {word!r}: {proc.stderr.read()}")  # type: ignore[union-attr]


def end(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL the child if it still runs; its remaining stdout and stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.communicate(timeout=60)
