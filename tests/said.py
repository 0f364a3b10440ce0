"""A child's line on a stdout it shares with other processes (the ranks of one torchrun job).

print() writes a text and its newline in two writes when Python runs unbuffered
(PYTHONUNBUFFERED=1, which CI machines often set): two ranks printing at the same moment then
give `recording Arecording A` and an empty line. One write of a line shorter than PIPE_BUF
(4096 bytes on Linux) lands whole on a pipe, whoever else writes to it.
"""

from __future__ import annotations

import os


def say(line: str) -> None:
    """Write `line` and its newline to stdout in one write."""
    os.write(1, f"{line}\n".encode())
