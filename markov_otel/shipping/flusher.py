"""The flusher thread: cuts the record buffer into batches, encodes them, appends them to the spool.

It is the only consumer of the record buffer, so the training thread never waits for a lock: it
extends a deque with a record's three fields, and wakes the flusher once a batch is full. The
fields lie flat (time, step, values, time, step, ...) rather than as one tuple per record: a tuple
holding a dict stays tracked by the garbage collector, and full collections walking 200k buffered
records cost a tight loop about 0.4 µs a record. One `extend` and one C loop of `popleft` are
each atomic under the GIL, so the deque always holds whole records. A batch is bounded in records
(`batch_size`) and in bytes (`max_batch_bytes`, well under the backend's body limit), so every
line can be sent as one request. A batch that cannot be written (disk full) stays in memory in
order and is retried each cycle, the trouble logged once; while `MAX_UNWRITTEN_BYTES` of them
wait, the flusher takes no more records, so the buffer fills and add_record's backpressure holds
memory bounded (never a drop).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import repeat, starmap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markov_otel.otel.encoding import MetricsEncoder, Runs, encode_lines, layout
from markov_otel.otel.series import SeriesTable
from markov_otel.shipping.encoder_process import EncoderProcess
from markov_otel.weather import SayOnce

if TYPE_CHECKING:
    from markov_otel.otel.providers import AggregatedView

log = logging.getLogger("markov_otel")

Batch = tuple[list[int], list[int], list[Mapping[str, Any]], str]
"""Times, steps, value dicts, and the resource JSON of one batch."""

FIELDS = 3
"""Items a record takes in the buffer: time_ns, step, values."""

START_BATCHES = 8
"""Batches taken in one cycle that start the encoder process (encoder_process: auto): the
flusher lags behind a tight loop whose GIL it shares."""
IN_FLIGHT = 16
"""Batches handed to the encoder process and not yet answered. Many: the flusher waits for an
answer only now and then, and then finds several (each wait lets the training thread take the
GIL, which the flusher must then wait for: with 2, a tight loop outran the flusher)."""
IN_FLIGHT_BYTES = 2 << 20
"""Frame bytes in flight likewise (a batch of 1000 4-float records is ~55 kB), so batches of
wide records stay few in memory; two are always let in flight."""
ANSWER_TIMEOUT = 5.0
"""Seconds the encoder process has to take or answer a batch before it is dropped."""

MAX_UNWRITTEN_BYTES = 64 << 20
"""Encoded batches kept in memory while the disk refuses them, before the flusher pauses."""


def in_flight_full(batches: int, size: int) -> bool:
    """Whether the flusher reads an answer before it hands over more: past IN_FLIGHT batches
    or IN_FLIGHT_BYTES of frames in flight, though two batches may always be."""
    return batches > 2 and (batches > IN_FLIGHT or size > IN_FLIGHT_BYTES)


class Flusher:
    """One per recorder; `stop()` drains everything, writes the final batch, and joins."""

    def __init__(
        self,
        buffer: deque[Any],
        write: Callable[[bytes, int], None],
        resource: Callable[[], str],
        *,
        batch_size: int,
        max_batch_bytes: int,
        interval: float,
        on_cycle: Callable[[], None],
        view: AggregatedView,
        series: SeriesTable | None = None,
        encoder_process: str = "auto",
        metrics_file: Path | None = None,
        others: deque[Any] | None = None,
        write_logs: Callable[[bytes], None] | None = None,
    ) -> None:
        self._buffer, self._write, self._resource = buffer, write, resource
        self._batch_size, self._max_bytes = batch_size, max_batch_bytes
        self._interval, self._on_cycle, self._view = interval, on_cycle, view
        self._encoder = MetricsEncoder(series)
        self._series = series
        # The encoder process (encoder_process.py): started once the flusher lags ("auto"),
        # at the first cycle ("always") or never; dropped for good after any trouble.
        usable = metrics_file is not None and os.name == "posix"  # pipes select()ed on
        self._process_mode = encoder_process if usable else "never"
        self._metrics_file = metrics_file  # where `write` appends: the process appends there too
        self._answered_end = 0  # the metrics file's size after the last batch answered
        self._cut_to: int | None = None  # a dropped process's unanswered tail starts here
        self._process: EncoderProcess | None = None
        self._process_dropped = False
        # Handed over, not yet answered: (seq, batch, its frame's bytes).
        self._handed: deque[tuple[int, Batch, int]] = deque()
        self._seq = 0
        self._unwritten: deque[tuple[bytes, int]] = deque()
        self._unwritten_bytes = 0
        # Arrays and texts (recorder._add_others): (time_ns, step, key, copy or text) each.
        self._others: deque[Any] = others if others is not None else deque()
        self.others_out = 0  # their bytes taken, against the recorder's count of bytes put in
        self._write_logs = write_logs
        self._unwritten_logs: deque[bytes] = deque()
        self._wake = threading.Event()
        # Held from taking a batch out of the buffer until the view's last step is that of the
        # batch: a system sample appended under it (recorder._append_sample) carries the step
        # of the last record exactly, whether that record is still buffered or already taken.
        self.taking = threading.Lock()
        self._stopping = False
        self._deadline = math.inf  # set by stop()
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
        buffered = sum(map(len, list(self._buffer)[2::FIELDS]))
        handed = sum(sum(map(len, batch[2])) for _seq, batch, _size in list(self._handed))
        return buffered + handed + sum(points for _data, points in list(self._unwritten))

    def stop(self, timeout: float) -> bool:
        """Drain, write the final batch (even with no points), join; False if time ran out."""
        self._deadline = time.monotonic() + max(0.0, timeout - 0.1)  # retries end before join
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        pending = self._unwritten or self._buffer or self._handed or self._others
        return done and not pending and not self._unwritten_logs

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
                if not stopping:
                    continue
                if time.monotonic() < self._deadline:
                    self._wake.set()  # retry the final cycle now, not an interval later
                    continue
            if stopping:
                return

    def _cycle(self, *, final: bool) -> None:
        while not self._drain() and final and time.monotonic() < self._deadline:
            time.sleep(0.05)  # disk full at stop(): keep trying until its deadline
        if final:  # the last batch carries the final Resource even when no points are pending
            self._keep(self._encoder.encode_columns([], [], [], self._resource())[0], 0)
            while not self._write_unwritten() and time.monotonic() < self._deadline:
                time.sleep(0.05)
            self._close_process()
        self._on_cycle()

    def _drain(self) -> bool:
        """Encode and write what is buffered; True when all of it is on disk. While the disk
        refuses, encoded batches are kept (in order) up to MAX_UNWRITTEN_BYTES."""
        written = self._write_unwritten()
        buffer = self._buffer
        taken = 0
        self._start_process(taken)
        while buffer and self._unwritten_bytes < MAX_UNWRITTEN_BYTES:
            with self.taking:
                self._take(buffer)
            taken += 1
            if taken == START_BATCHES:  # lagging: the loop outruns this thread
                self._start_process(taken)
            written = written and self._write_unwritten()
        while self._handed:  # a cycle ends with every batch it took encoded
            self._answer()
        self._take_others()  # nothing is handed over now: this thread may write metrics
        logs_written = self._write_logs_unwritten()
        return self._write_unwritten() and written and logs_written and not buffer

    def _take_others(self) -> None:
        """Arrays and texts recorded since the last cycle: bucketed and encoded here, off the
        caller's thread (otel/distributions.py, otel/texts.py), kept in order to write."""
        others = self._others
        if not others:
            return
        items = list(starmap(others.popleft, repeat((), len(others))))  # a C loop: atomic
        resource = self._resource()
        try:
            texts = [item for item in items if type(item[3]) is str]
            arrays = [item for item in items if type(item[3]) is not str]
            lines = _encode_arrays(arrays, resource, self._max_bytes) if arrays else []
        except Exception:
            others.extendleft(reversed(items))  # a failed encode loses nothing
            raise
        for line, points in lines:
            self._keep(line, points)
        if texts:
            from markov_otel.otel import texts as text_lines

            self._unwritten_logs.extend(text_lines.encode_lines(texts, resource, self._max_bytes))
        self.others_out += sum(map(_weight, items))

    def _write_logs_unwritten(self) -> bool:
        """Write the texts' log lines in order; True when none is left (a failed write is said
        with the metrics' trouble and retried next cycle)."""
        while self._unwritten_logs and self._write_logs is not None:
            try:
                self._write_logs(self._unwritten_logs[0])
            except OSError as exc:
                self._trouble.say(
                    "logs", logging.ERROR,
                    "markov_otel cannot write recorded texts to the run dir (%s); keeping "
                    "them in memory and retrying", exc,
                )  # fmt: skip
                return False
            self._unwritten_logs.popleft()
        return True

    def _take(self, buffer: deque[Any]) -> None:
        """One batch out of the buffer, encoded and kept; the view's last step moves to it."""
        take = min(len(buffer) // FIELDS, self._batch_size) * FIELDS
        fields = list(starmap(buffer.popleft, repeat((), take)))  # a C loop: atomic
        times, steps, values = fields[0::3], fields[1::3], fields[2::3]
        batch = (times, steps, values, self._resource())
        process = self._process
        if process is not None and process.failed and not self._handed:
            self._drop_process("")  # it ended before taking anything: quietly, as if never
        elif (
            process is not None
            and not self._unwritten
            and process.poll_ready()
            # While stop() drains, the training thread is done with the GIL: this thread
            # encodes every other batch as the process encodes the one it holds (stop()
            # waits about half as long for a tight loop's backlog).
            and not (self._stopping and self._handed)
        ):
            self._view.last_step = steps[-1]
            self._hand_over(process, batch)
            return
        try:
            encoded = self._encode(batch)
        except Exception:
            buffer.extendleft(reversed(fields))  # a failed encode loses nothing
            raise
        # What the process holds is written first: lines stay in record order, and this thread
        # writes only while the process holds nothing (a dropped process's unanswered lines
        # are cut from the file's end, which must then be its own).
        while self._handed:
            self._answer()
        self._keep_encoded(batch, *encoded)
        self._view.last_step = steps[-1]

    def _encode(self, batch: Batch) -> tuple[list[tuple[bytes, int]], Runs]:
        """A batch's lines (newline included) with their points, and its runs of keys."""
        times, steps, values, resource = batch
        grouped, split = layout(values)
        lines = encode_lines(
            self._encoder, times, steps, values, resource, self._max_bytes, grouped, split
        )
        return lines, grouped

    def _keep_encoded(self, batch: Batch, lines: list[tuple[bytes, int]], grouped: Runs) -> None:
        """Keep a batch's lines to write, in order, and its last values."""
        for line, points in lines:
            self._keep(line, points)
        self._keep_last(grouped, batch[1], batch[2])

    def _encode_here(self, batch: Batch) -> None:
        """Encode a batch in this thread and keep its lines to write; its last values too."""
        self._keep_encoded(batch, *self._encode(batch))

    # -- the encoder process ---------------------------------------------------------------------

    def _start_process(self, taken: int) -> None:
        mode = self._process_mode
        if self._process is not None or self._process_dropped or mode == "never":
            return
        if mode == "auto" and (taken < START_BATCHES or self._stopping):
            return
        assert self._metrics_file is not None  # mode is "never" without one
        try:
            rank = self._series.tag_rank if self._series else None
            self._process = EncoderProcess(self._metrics_file, rank)
        except OSError as exc:  # no fork, no interpreter: encode here, as always
            self._process_dropped = True
            log.debug("markov_otel: no encoder process (%s); encoding in the flusher", exc)
            return
        if mode == "always":
            self._process.wait_ready(ANSWER_TIMEOUT)

    def _hand_over(self, process: EncoderProcess, batch: Batch) -> None:
        """Give the process one batch (kept until answered: whatever fails, it is not lost)."""
        first = not self._handed
        self._seq += 1
        self._handed.append((self._seq, batch, 0))
        try:
            if first:  # all answered and written: the file ends where the process starts
                self._answered_end = os.stat(self._metrics_file).st_size  # type: ignore[arg-type]
        except OSError as exc:
            self._drop_process(f"the metrics file: {exc}")
            return
        size = process.send(self._seq, batch, self._max_bytes, self._series, self._patience())
        if not size:
            self._drop_process("it did not take a batch")
            return
        self._handed[-1] = (self._seq, batch, size)
        while self._process is not None and in_flight_full(
            len(self._handed), sum(frame for _seq, _batch, frame in self._handed)
        ):
            self._answer()

    def _answer(self) -> None:
        """Count the oldest batch handed over once the process has written it (or drop the
        process, and encode and write it here after all)."""
        process = self._process
        if process is None:
            self._drop_process("")
            return
        reply = process.receive(self._patience())
        seq, (_times, steps, values, _resource), _size = self._handed[0]
        if reply is None or reply[0] != seq:
            why = f"it could not write: {process.error}" if process.error else "no answer"
            self._drop_process(why if reply is None else f"it answered batch {reply[0]!r}")
            return
        self._handed.popleft()
        _seq, line_points, grouped, self._answered_end = reply
        points = sum(line_points)
        self._view.counts["recorded"] += points
        self._view.counts["spooled"] += points
        self._keep_last(grouped, steps, values)

    def _drop_process(self, why: str) -> None:
        """Close the process for good; `why` is the trouble to say (empty: it ended before
        taking a batch). What it did not answer is cut from the file and encoded here."""
        process, self._process = self._process, None
        if process is not None:
            self._process_dropped = True
            process.close(timeout=0.5)  # killed if need be: it writes nothing more
            if self._handed:  # what it wrote past the last answer is cut before any write
                self._cut_to = self._answered_end
            if why:
                log.warning(
                    "markov_otel: the encoder process ended (%s); the flusher encodes from now "
                    "on, nothing is lost", why
                )  # fmt: skip
        while self._handed:
            self._encode_here(self._handed.popleft()[1])

    def _patience(self) -> float:
        """How long the encoder process may take: ANSWER_TIMEOUT, less once stop() is near its
        deadline (the batches it holds are then encoded here in time)."""
        return max(0.05, min(ANSWER_TIMEOUT, self._deadline - time.monotonic() - 0.5))

    def _close_process(self) -> None:
        """After the final cycle: end the encoder process (its input ends, it exits)."""
        process, self._process = self._process, None
        if process is not None:
            process.close()

    def _cut_back(self, end: int) -> bool:
        """Cut the metrics file back to `end`, the last batch a dropped process answered for:
        what follows is unanswered (maybe torn) and its batches are encoded again here. Until
        the file can be cut nothing is written after that tail (the batches would be there
        twice): False, said once, and the batches wait in memory like those of a full disk."""
        assert self._metrics_file is not None  # a process was dropped: it had a file
        try:
            if os.stat(self._metrics_file).st_size > end:
                os.truncate(self._metrics_file, end)
        except FileNotFoundError:
            pass  # gone: there is nothing to cut
        except OSError as exc:
            self._trouble.say(
                "cut", logging.ERROR,
                "markov_otel cannot cut %s back to the last batch the encoder process answered "
                "for (%s); keeping %d batch(es) in memory and retrying",
                self._metrics_file, exc, len(self._unwritten),
            )  # fmt: skip
            return False
        self._cut_to = None
        return True

    def _keep(self, data: bytes, points: int) -> None:
        """Keep a line (newline included) to write, in order."""
        self._unwritten.append((data, points))
        self._unwritten_bytes += len(data)
        self._view.counts["recorded"] += points

    def _keep_last(self, grouped: Runs, steps: list[int], values: list[Mapping[str, Any]]) -> None:
        """Each key's last value and step: the last record of each run of records with the same
        keys, in order, so a later run overwrites an earlier one. (By key: a run's records may
        hold their keys in another order than `keys`.)"""
        last = self._view.last
        for keys, _lo, hi in grouped:
            step, record = steps[hi - 1], values[hi - 1]
            last.update(zip(keys, zip(map(record.__getitem__, keys), repeat(step)), strict=True))

    def _write_unwritten(self) -> bool:
        """Write kept batches in order; True when none is left, False on a write error."""
        if self._cut_to is not None and not self._cut_back(self._cut_to):
            return False
        while self._unwritten:
            data, points = self._unwritten[0]
            try:
                self._write(data, points)
            except OSError as exc:
                self._trouble.say(
                    "disk", logging.ERROR,
                    "markov_otel cannot write to the run dir (%s); keeping %d batch(es) in "
                    "memory and retrying (add_record waits once %d MB are held)",
                    exc, len(self._unwritten), MAX_UNWRITTEN_BYTES >> 20,
                )  # fmt: skip
                return False
            self._unwritten.popleft()
            self._unwritten_bytes -= len(data)
            self._view.counts["spooled"] += points
        return True


def _encode_arrays(items: list[Any], resource: str, max_bytes: int) -> list[tuple[bytes, int]]:
    from markov_otel.otel import distributions  # numpy: only once an array was recorded

    return list(distributions.encode_lines(items, resource, max_bytes))


def _weight(item: tuple[int, int, str, Any]) -> int:
    """Bytes an array or a text holds in memory until encoded (the recorder's bound)."""
    value = item[3]
    return len(value) if type(value) is str else int(value.nbytes)
