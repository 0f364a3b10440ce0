"""Reads in a lane of their own: their own connections, their own threads, a bound on both.

Ingest holds the store's one writer connection (and its lock); reads never take that lock. Each
read borrows one of at most `READ_CONNECTIONS` reader connections (`ReaderPool`: SQLite in WAL
mode lets readers run beside the writer; on PostgreSQL they are ordinary sessions), and runs in
a worker thread that only reads take (`ReadLane`: an anyio capacity limiter of the same size), so
any number of open pages queue as coroutines on the event loop, never in the thread pool that
ingest's parsing and storing run in, and never behind ingest's lock. What one read may do is
bounded by the routes (`series.MAX_POINTS_A_RESPONSE`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["READ_CONNECTIONS", "ReadLane", "ReaderPool"]

READ_CONNECTIONS = 2
"""Reads one server process runs at once. Two keep a slow read from holding up the others while
leaving most of the GIL (and, on two cores, the CPU) to ingest: each reader thread that runs
Python takes an equal turn with the thread that parses a batch."""

T = TypeVar("T")


class ReaderPool:
    """Up to `size` connections for reads, opened when first needed and reused (LIFO)."""

    def __init__(self, connect: Callable[[], Any], size: int = READ_CONNECTIONS) -> None:
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
    """Runs blocking reads in worker threads of their own, at most `size` at once."""

    def __init__(self, size: int = READ_CONNECTIONS) -> None:
        self._limiter = anyio.CapacityLimiter(size)

    async def run(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)` in a reader thread; the caller's coroutine waits, the loop does not."""
        return await anyio.to_thread.run_sync(read, *args, limiter=self._limiter)
