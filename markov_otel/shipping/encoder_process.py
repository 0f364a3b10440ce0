"""The encoder process: the flusher's OTLP-JSON encoding on another core, off the training GIL.

A tight training loop pays for the flusher's encoding (about 0.2 µs of GIL time a point)
because both threads share one interpreter lock. Once the flusher lags behind such a loop
(setting `encoder_process`: auto), it starts this process and hands it each batch as a pickle
(~0.35 µs of the training process's CPU a record instead of ~0.9). The process encodes with the
same code (`encode_lines`), appends the batch's lines to the run dir's metrics file in one write,
and answers with the file's end offset. While batches are handed over, only this process writes
that file; the flusher writes again once every batch is answered (the final batch at stop).
Both pipes hold PIPE_BYTES, so many batches go over and their answers come back without the
flusher blocking (flusher.IN_FLIGHT); the process starts the disk's writeback as it goes
(`_Writeback`) and leaves without the interpreter's teardown at the end of its input.

Nothing lost, nothing twice: if the process dies, stops answering or cannot write, the flusher
kills it, cuts the file back to the end of the last batch answered (what follows is unanswered,
maybe torn) and encodes the unanswered batches itself; they come out byte for byte the same,
so lines a sender already read are sent again under the same Idempotency-Key and stored once.
The process is then not started again for that recorder. A training process killed outright
leaves the process to finish the batches it holds and exit at the end of its input.

Frames on both pipes: an 8-byte big-endian length, then a pickle. To the process:
`(seq, times, steps, values, split, resource, max_bytes, [Series described since the last
frame])`, where a batch whose records all have the same keys (the usual one) comes as `split`,
its keys and a column of values per key (`encoding.layout`), and `values` is None: a column of
floats pickles and unpickles about 2.5x faster than as many dicts, and is what the encoder
takes anyway.
From it: `("ready",)` once, then `(seq, [points of each line], runs, end offset)` per batch, in
order, or `("error", seq, message)`, after which it reads its input till it ends and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from markov_otel.otel.encoding import MetricsEncoder, Runs, encode_lines, layout
from markov_otel.otel.series import Series, SeriesTable

log = logging.getLogger("markov_otel")

_HEADER = struct.Struct(">Q")
WRITEBACK_BYTES = 32 << 20
"""Bytes appended between two starts of the disk's writeback (`_Writeback`)."""
PIPE_BYTES = 1 << 20
"""Bytes each pipe to and from the process holds (the default 64 kB holds about one frame)."""
MAX_FRAME = 1 << 30
"""A frame longer than this is garbage (a batch is a few MB at most): the process is dropped."""

Reply = tuple[int, list[int], Runs, int]


class EncoderProcess:
    """The flusher's handle on one encoder process; every call is bounded in time."""

    def __init__(self, metrics_file: Path, tag_rank: int | None) -> None:
        rank = "" if tag_rank is None else str(tag_rank)
        args = [sys.executable, "-c", _START, _PACKAGE_DIR, str(metrics_file), rank]
        # A session of its own: Ctrl-C at the terminal is the training process's to handle.
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to, self._from = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        # Non-blocking: a process that stops reading must not hang the flusher, and a write or
        # a read is tried before any select (each call lets the training thread take the GIL,
        # which the flusher then waits for: fewer calls a batch, more batches a second).
        for fd in (self._to, self._from):
            os.set_blocking(fd, False)
            _widen(fd)
        self.ready = False
        self.failed = False
        self.error = ""  # what the process said when it could not write
        self._described = 0
        self._inbox = bytearray()  # the process's messages, read but not yet taken
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll_ready(self) -> bool:
        """True once the process has said it is ready (never waits)."""
        return self.wait_ready(0.0)

    def wait_ready(self, timeout: float) -> bool:
        """poll_ready, waiting up to `timeout` for the process to start."""
        if not self.ready and not self.failed:
            message = self._receive(timeout)
            if message is not None:
                self.ready = message == ("ready",)
                self.failed = not self.ready
        return self.ready

    def send(
        self,
        seq: int,
        batch: tuple[list[int], list[int], list[Mapping[str, Any]], str],
        max_bytes: int,
        series: SeriesTable | None,
        timeout: float,
    ) -> int:
        """Hand one batch over: the frame's bytes, or 0 (and failed) if the process cannot take
        it in time. Its answers are read meanwhile: a process blocked writing an answer reads
        no input."""
        described: list[Series] = []
        if series is not None:
            described = series.described_since(self._described)
            self._described += len(described)
        times, steps, values, resource = batch
        split = layout(values)[1]
        kept = values if split is None else None  # the process is given one or the other
        frame = (seq, times, steps, kept, split, resource, max_bytes, described)
        payload = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        data = _HEADER.pack(len(payload)) + payload
        return len(data) if self._write(memoryview(data), time.monotonic() + timeout) else 0

    def _write(self, data: memoryview, deadline: float) -> bool:
        """Write `data` to the process by `deadline`, reading its answers meanwhile; False
        (and failed) if it cannot be done."""
        try:
            with contextlib.suppress(BlockingIOError):  # the pipe is full: select below
                data = data[os.write(self._to, data) :]
            while data:
                left = max(0.0, deadline - time.monotonic())
                readable, writable, _ = select.select([self._from], [self._to], [], left)
                if not readable and not writable:
                    return self._fail()
                if readable and not self._pull():
                    return self._fail()
                if writable:
                    data = data[os.write(self._to, data) :]
        except (OSError, ValueError):  # the process is gone (EPIPE) or the pipe closed
            return self._fail()
        return True

    def receive(self, timeout: float) -> Reply | None:
        """The next batch's answer, or None (and failed) if none comes in time, or if it is
        the process's last word `("error", seq, message)`, kept in `error`."""
        reply = self._receive(timeout)
        if isinstance(reply, tuple) and len(reply) == 4:
            return reply
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == "error":
            self.error = str(reply[2])
        self._fail()
        return None

    def close(self, timeout: float = 1.0) -> None:
        """End the process: EOF on its input, then a kill if it does not exit in time."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _fail(self) -> bool:
        self.failed = True
        self._proc.kill()
        return False

    def _pull(self) -> bool:
        """Move what the process wrote into the inbox; False (and failed) at EOF or on an
        error: the process ended, or could not start (no `markov_otel` for its interpreter)."""
        try:
            chunk = os.read(self._from, 1 << 20)
        except BlockingIOError:
            return True  # nothing yet
        except OSError:
            chunk = b""
        self._inbox += chunk
        self.failed = self.failed or not chunk
        return bool(chunk)

    def _receive(self, timeout: float) -> Any:
        """The next message from the inbox, reading more until `timeout`; None if none."""
        deadline = time.monotonic() + timeout
        tried = False
        while True:
            if len(self._inbox) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._inbox)
                if size > MAX_FRAME:
                    return None
                end = _HEADER.size + size
                if len(self._inbox) >= end:
                    payload = bytes(self._inbox[_HEADER.size : end])
                    del self._inbox[:end]
                    try:
                        return pickle.loads(payload)
                    except Exception:  # a torn or foreign frame: the process failed
                        return None
            if not tried:  # what the process already wrote, without a select
                tried = True
                if not self._pull():
                    return None
                continue
            try:
                ready = select.select([self._from], [], [], max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):
                return None
            if not ready[0] or not self._pull():
                return None

    def _forget(self) -> None:
        """In a fork's child: point the pipe descriptors at /dev/null rather than close them
        (the Popen's file objects close them later; a closed number could be someone else's
        by then), so this copy holds no end of the process's pipes."""
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (self._to, self._from):
                os.dup2(null, fd)
            os.close(null)
        self.failed = True


def _widen(fd: int) -> None:
    """Let a pipe hold PIPE_BYTES (Linux; elsewhere, or past the system's limit, it keeps its
    size): a frame of a batch, ~55 kB, then goes in one write, and answers pile up unread."""
    import fcntl  # POSIX only, as the process is (flusher.py)

    with contextlib.suppress(AttributeError, OSError):  # F_SETPIPE_SZ: Linux
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


_LIVE: weakref.WeakSet[EncoderProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A fork (a DataLoader worker) must not keep an encoder's pipes open: the process would
    not see EOF when the training process ends."""
    for encoder in list(_LIVE):
        encoder._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


def main() -> None:
    """The process: encode and append each batch it is given, until its input ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, rank = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    table = SeriesTable(int(rank) if rank else None)
    encoder = MetricsEncoder(table)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    writeback = _Writeback(fd)
    _write(out, ("ready",))
    while True:
        frame = _read_frame(inp)
        if frame is None:
            return
        seq, times, steps, values, split, resource, max_bytes, described = frame
        for series in described:
            table.describe(series.key, series.name, series.attributes)
        grouped = layout(values)[0] if split is None else [(split[0], 0, len(times))]
        lines = encode_lines(encoder, times, steps, values, resource, max_bytes, grouped, split)
        data = memoryview(b"".join(line for line, _points in lines))
        size = len(data)
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:  # the flusher cuts what this wrote back and takes over
            _write(out, ("error", seq, str(exc)))
            while inp.read(1 << 16):  # its input is taken till it ends: the flusher's next
                pass  # frames go through and it reads this answer, not a broken pipe
            return
        writeback.wrote(size)
        _write(out, (seq, [points for _line, points in lines], grouped, os.lseek(fd, 0, 2)))


class _Writeback:
    """Starts the disk's writeback of what this process appended every WRITEBACK_BYTES, from a
    thread of its own (fdatasync, no lock held), so the fsync at stop() finds little left to
    write: it took ~0.25 s for a tight loop's 500 MB, nearly all of it waiting on the disk,
    which is idle while the run goes on. Durability is unchanged: stop() fsyncs all the same."""

    def __init__(self, fd: int) -> None:
        self._fd, self._pending = fd, 0
        self.synced = 0  # fdatasyncs done (what a test can see of this)
        self._due = threading.Event()
        threading.Thread(target=self._run, name="markov-writeback", daemon=True).start()

    def wrote(self, size: int) -> bool:
        """Count `size` bytes appended; True when they start a writeback."""
        self._pending += size
        if self._pending < WRITEBACK_BYTES:
            return False
        self._pending = 0
        self._due.set()
        return True

    def _run(self) -> None:
        while self._due.wait():
            self._due.clear()
            try:
                _datasync(self._fd)
            except OSError:
                return  # the write path says what is wrong; this was only a head start
            self.synced += 1


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _write(out: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(payload)) + payload)
    out.flush()


def _read_frame(inp: IO[bytes]) -> Any:
    header = inp.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = inp.read(size)
    return pickle.loads(payload) if len(payload) == size else None


def run() -> None:
    """The process's entry: `main`, then out at once. Every answer is flushed and the kernel
    closes the file; the interpreter's own teardown (the modules `markov_otel` imports) took
    ~40 ms, which stop() waited for."""
    with contextlib.suppress(BrokenPipeError):  # the training process is gone
        main()
    os._exit(0)


# The process loads this very markov_otel package by its location (`python -m` would take the
# working directory's first, where another one may lie), and only it: its directory is not put
# on sys.path, where what lies beside it (site-packages, a checkout) could shadow the stdlib.
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # markov_otel/, above shipping/
_START = (
    "import sys, importlib.util as u; d = sys.argv.pop(1); "
    "s = u.spec_from_file_location('markov_otel', d + '/__init__.py', "
    "submodule_search_locations=[d]); "
    "m = sys.modules['markov_otel'] = u.module_from_spec(s); s.loader.exec_module(m); "
    "from markov_otel.shipping.encoder_process import run; run()"
)

if __name__ == "__main__":
    run()
