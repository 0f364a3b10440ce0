"""The flusher thread: cuts the record buffer into batches, encodes them, appends them to the spool.

It is the only consumer of the record buffer, so the training thread never waits for a lock: it
appends to a deque, and wakes the flusher once a batch is full. A batch that cannot be written
(disk full) stays in memory in order and is retried each cycle; the trouble is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from markov_otel.otel.encoding import MetricsEncoder, Record
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")


class Flusher:
    """One per recorder; `stop()` drains everything, writes the final batch, and joins."""

    def __init__(
        self,
        buffer: deque[Record],
        write: Callable[[bytes, int], None],
        resource: Callable[[], str],
        *,
        batch_size: int,
        interval: float,
        on_cycle: Callable[[], None],
        last: dict[str, Any],
        counts: dict[str, int],
    ) -> None:
        self._buffer, self._write, self._resource = buffer, write, resource
        self._batch_size, self._interval, self._on_cycle = batch_size, interval, on_cycle
        self._last, self._counts = last, counts
        self._encoder = MetricsEncoder()
        self._unwritten: deque[tuple[bytes, int]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = float("inf")  # set by stop()
        self._trouble = SayOnce(log)
        self._thread = threading.Thread(target=self._run, name="markov-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def backlog(self) -> int:
        """Points not yet on disk: those of buffered records and of unwritten batches."""
        buffered = sum(len(values) for _t, _s, values in list(self._buffer))
        return buffered + sum(points for _data, points in list(self._unwritten))

    def stop(self, timeout: float) -> bool:
        """Drain, write the final batch (even with no points), join; False if time ran out."""
        self._deadline = time.monotonic() + max(0.0, timeout - 0.1)  # retries end before join
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive() and not self._unwritten

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._cycle(final=stopping)
            except Exception:  # a bug here must not kill the thread that owns the data
                log.exception("markov_otel flusher cycle failed; retrying")
                time.sleep(min(self._interval, 1.0))
                continue
            if stopping:
                return

    def _cycle(self, *, final: bool) -> None:
        self._write_unwritten()
        while self._buffer:
            take = min(len(self._buffer), self._batch_size)
            records = [self._buffer.popleft() for _ in range(take)]
            try:
                line, points = self._encoder.encode(records, self._resource())
            except Exception:
                self._buffer.extendleft(reversed(records))  # a failed encode loses nothing
                raise
            self._unwritten.append(((line + "\n").encode("utf-8"), points))
            self._keep_last(records)
            self._counts["recorded"] += points
            self._write_unwritten()
        if final:  # the last batch carries the final Resource even when no points are pending
            line, _ = self._encoder.encode((), self._resource())
            self._unwritten.append(((line + "\n").encode("utf-8"), 0))
            while not self._write_unwritten() and time.monotonic() < self._deadline:
                time.sleep(0.05)  # disk full at stop(): keep trying until its deadline
        self._on_cycle()

    def _keep_last(self, records: list[Record]) -> None:
        last = self._last
        for _time_ns, step, values in records:
            for key, value in values.items():
                last[key] = (value, step)

    def _write_unwritten(self) -> bool:
        """Write kept batches in order; True when none is left, False on a write error."""
        while self._unwritten:
            data, points = self._unwritten[0]
            try:
                self._write(data, points)
            except OSError as exc:
                self._trouble.say(
                    "disk", logging.ERROR,
                    "markov_otel cannot write to the run dir (%s); keeping %d batch(es) in "
                    "memory and retrying", exc, len(self._unwritten),
                )  # fmt: skip
                return False
            self._unwritten.popleft()
            self._counts["spooled"] += points
        return True
