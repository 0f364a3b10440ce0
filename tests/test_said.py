"""tests/said.py's promise, which the torchrun tests rest on: lines said by processes that share
one stdout pipe arrive whole, even when Python runs unbuffered (as CI does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINES = 5000
SAYER = f"""
import sys
from said import say
sys.stdin.read(1)  # both start at once
for i in range({LINES}):
    say(f"{{sys.argv[1]}} {{i}} " + "x" * 200)
"""


def test_two_processes_saying_lines_into_one_pipe_at_once_tear_none() -> None:
    """Two unbuffered processes, one pipe, 5,000 lines each at full speed from the same moment:
    every line is whole, and each process's lines arrive once each, in its order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HERE)}
    read, write = os.pipe()
    sayers = [
        subprocess.Popen(
            [sys.executable, "-c", SAYER, name], stdin=subprocess.PIPE, stdout=write, env=env
        )
        for name in ("a", "b")
    ]
    os.close(write)
    for sayer in sayers:
        assert sayer.stdin is not None
        sayer.stdin.write(b"g")
        sayer.stdin.close()
    with os.fdopen(read, encoding="utf-8") as pipe:
        lines = pipe.read().split("\n")
    assert [sayer.wait(timeout=60) for sayer in sayers] == [0, 0]
    assert lines.pop() == ""  # the text ends with a newline
    whole = re.compile(r"^([ab]) (\d+) x{200}$")
    assert all(whole.match(line) for line in lines), [x for x in lines if not whole.match(x)][:3]
    for name in ("a", "b"):
        said = [int(m[2]) for m in map(whole.match, lines) if m and m[1] == name]
        assert said == list(range(LINES))
