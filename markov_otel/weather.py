"""How weather (network, disk, backend trouble) is reported: once, not once per batch.

The recording path never raises for weather; it keeps the data and says what happened. Saying
it on every retry would bury the one useful line, so each kind of trouble is logged the first
time, and again only after `clear()` (the trouble went away and came back).
"""

from __future__ import annotations

import logging
import threading
from typing import Any


class SayOnce:
    """A logger that says each kind of trouble once until it is cleared."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def say(self, kind: str, level: int, message: str, *args: Any) -> None:
        with self._lock:
            if kind in self._said:
                return
            self._said.add(kind)
        self._log.log(level, message, *args)

    def clear(self, kind: str) -> None:
        with self._lock:
            self._said.discard(kind)
