"""Waiting in tests: poll a condition until it holds, with a deadline.

A wait, never a timed assertion: the deadline is generous (a bound on how long a loaded
machine may take, not a speed claim), and what failed is named.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def until(
    condition: Callable[[], object], what: str = "the condition", seconds: float = 30.0
) -> None:
    """Return once `condition()` is true; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {seconds} s"
        time.sleep(0.01)
