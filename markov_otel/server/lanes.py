"""Reads in a lane of their own: their own connections, their own threads, a bound on both.

Ingest holds the store's one writer connection (and its lock); reads never take that lock. Each
read borrows one of at most `READ_CONNECTIONS` reader connections (`ReaderPool`: SQLite in WAL
mode lets readers run beside the writer; on PostgreSQL they are ordinary sessions), and runs in
a worker thread that only reads take (`ReadLane`: an anyio capacity limiter of the same size), so
any number of open pages queue as coroutines on the event loop, never in the thread pool that
ingest's parsing and storing run in, and never behind ingest's lock. While ingest works, the
lane paces itself to a share of the time (`READ_SHARE`): a reader thread running Python takes
turns on the GIL with the thread that parses a batch, and on two cores the CPU too. What one
read may do is bounded by the routes (`series.MAX_POINTS_A_RESPONSE`).

A write's answer needs a read too (a registration's last step, a PATCH's tags). Those run at
once in the writer's thread pool (`ReadLane.for_write`) on a reader connection the lane's
threads never all take (`WRITE_ANSWERS`): a recorder's register and final PATCH never queue
behind hundreds of open pages, nor wait out the pace that ingest itself sets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["READ_CONNECTIONS", "READ_SHARE", "WRITE_ANSWERS", "ReadLane", "ReaderPool"]

READ_CONNECTIONS = 2
"""Reads one server process runs at once. Two keep a slow read from holding up the others while
leaving most of the GIL (and, on two cores, the CPU) to ingest: each reader thread that runs
Python takes an equal turn with the thread that parses a batch."""

WRITE_ANSWERS = 1
"""Reader connections beyond the lane's READ_CONNECTIONS, so a write's answer finds one free."""

READ_SHARE = 0.05
"""The share of the time reads may take while ingest works (the rest is ingest's)."""
REQUEST_COST = 0.001
"""Seconds the event loop spends on a read request besides the read (HTTP parse, routing,
answer), counted with the read when the lane paces itself."""

T = TypeVar("T")


class ReaderPool:
    """Up to `size` connections for reads, opened when first needed and reused (LIFO)."""

    def __init__(
        self, connect: Callable[[], Any], size: int = READ_CONNECTIONS + WRITE_ANSWERS
    ) -> None:
        self._connect, self._size = connect, size
        self._free: list[Any] = []
        self._open = 0
        self._closed = False
        self._ready = threading.Condition()

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        """One connection for the block's reads; waits while all are lent out. A connection
        whose block raised a database error is closed, not lent again (it may be broken)."""
        conn = self._take()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            self._give_back(conn, healthy)

    def _take(self) -> Any:
        with self._ready:
            while not self._closed and not self._free and self._open >= self._size:
                self._ready.wait()
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._free:
                return self._free.pop()
            self._open += 1
        try:
            return self._connect()
        except BaseException:
            with self._ready:
                self._open -= 1
                self._ready.notify()
            raise

    def _give_back(self, conn: Any, healthy: bool) -> None:
        with self._ready:
            if healthy and not self._closed:
                self._free.append(conn)
            else:
                self._open -= 1
                conn.close()
            self._ready.notify()

    def close(self) -> None:
        """Close the idle connections now, the lent ones as they come back."""
        with self._ready:
            self._closed = True
            for conn in self._free:
                conn.close()
            self._open -= len(self._free)
            self._free.clear()
            self._ready.notify_all()


class ReadLane:
    """Runs blocking reads in worker threads of their own, at most `size` at once; while ingest
    is working (`ingesting()`), reads together take at most `share` of the time: after each
    read the lane rests (1 - share) / share times the CPU time the read took (plus the
    request's own cost on the event loop, `REQUEST_COST`), so readers polling flat out slow down
    instead of ingest. With nothing to ingest, reads run back to back."""

    def __init__(
        self,
        size: int = READ_CONNECTIONS,
        *,
        share: float = READ_SHARE,
        ingesting: Callable[[], bool] = lambda: False,
    ) -> None:
        self._places = anyio.CapacityLimiter(size)  # the queue: first come, first served
        self._threads = anyio.CapacityLimiter(size)
        self._rest = (1 - share) / share
        self._ingesting = ingesting
        self._free_at = 0.0

    async def run(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)` in a reader thread; the caller's coroutine waits, the loop does not."""
        async with self._places:
            if self._ingesting():
                wait = self._free_at - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
            spent = [0.0]
            try:
                return await anyio.to_thread.run_sync(
                    _timed, spent, read, *args, limiter=self._threads
                )
            finally:
                if self._ingesting():
                    rest = (spent[0] + REQUEST_COST) * self._rest
                    self._free_at = max(self._free_at, time.monotonic()) + rest

    async def for_write(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)` for a write's answer: in the thread pool writes use, at once, neither
        queued behind the lane's readers nor paced (see the module's docstring)."""
        return await anyio.to_thread.run_sync(read, *args)


def _timed(spent: list[float], read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, its thread's CPU time put in `spent` (time waiting for the GIL or the
    database is not the read's cost, and counting it would slow reads the more, the busier)."""
    start = time.thread_time()
    try:
        return read(*args)
    finally:
        spent[0] = time.thread_time() - start
