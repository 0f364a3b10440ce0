"""A one-line progress bar on a terminal (done/total bytes and batches, rate, ETA), as pip draws
for a download; nothing at all when the stream is not a terminal (a pipe, a CI log).

Written here rather than taken from a library: none of ours has one (requests, OpenTelemetry),
and tqdm or rich would be a new dependency of every training job for one `mkv sync` line.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO

from markov_otel.cli.display import duration, size, size_pair

REDRAW_EVERY = 0.1
"""Seconds between redraws: a fast sync of a million lines must not spend its time drawing."""


class ProgressBar:
    """`bar.update(done_bytes, done_batches)` as work advances; `bar.close()` at the end."""

    def __init__(
        self,
        label: str,
        total_bytes: int,
        total_batches: int,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total_bytes, self.total_batches = label, total_bytes, total_batches
        self._stream, self._clock = stream, clock
        self._began = clock()
        self._drawn_at: float | None = None
        self._done = (0, 0)
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self._cells = ("█", "░") if encoding.startswith("utf") else ("#", "-")

    def update(self, done_bytes: int, done_batches: int) -> None:
        self._done = (done_bytes, done_batches)
        now = self._clock()
        if self._drawn_at is None or now - self._drawn_at >= REDRAW_EVERY:
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw(self._clock())
        self._stream.write("\n")
        self._stream.flush()

    def line(self, now: float) -> str:
        """The text of the bar at `now`, fitted to the terminal's width."""
        done_bytes, done_batches = self._done
        elapsed = max(now - self._began, 1e-9)
        rate = done_bytes / elapsed
        left = max(0, self.total_bytes - done_bytes)
        eta = duration(left / rate) if rate > 0 and done_bytes else "?"
        facts = (
            f"{size_pair(done_bytes, self.total_bytes)}  "
            f"{done_batches}/{self.total_batches} batches  {size(rate)}/s  ETA {eta}"
        )
        width = shutil.get_terminal_size((80, 20)).columns - 1
        cells = min(30, width - len(self.label) - 60)  # what the facts usually leave free
        fraction = min(1.0, done_bytes / self.total_bytes) if self.total_bytes else 1.0
        bar = ""
        if cells >= 8:
            full = int(fraction * cells)
            bar = self._cells[0] * full + self._cells[1] * (cells - full) + " "
        return f"{self.label} {bar}{fraction:4.0%}  {facts}"[:width]

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._stream.write("\r" + self.line(now) + "\x1b[K")  # \x1b[K: clear a longer old line
        self._stream.flush()
