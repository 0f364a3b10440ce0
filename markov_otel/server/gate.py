"""A bound on concurrent body work: at most N requests read, parse and store a body at once.

A body costs memory several times its size while it is parsed (a 32 MB protobuf batch becomes
hundreds of MB of Python objects), so the number of bodies in flight, not the number of
connections, is what bounds the server's memory. Past the bound a request is answered at once
with 503 and `Retry-After` (which the recorder's sender and OTLP exporters honour) before its
body is read: uvicorn stops reading a connection whose body nobody consumes, so a waiting client
costs a socket, not memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from markov_otel.errors import ConfigError
from markov_otel.server.bodies import ApiError
from markov_otel.server.options import DEFAULT_MAX_CONCURRENT_INGEST

__all__ = ["DEFAULT_MAX_CONCURRENT_INGEST", "IngestGate"]

RETRY_AFTER_SECONDS = 1


class IngestGate:
    """Counts the bodies in flight on the event loop (one loop, so no lock is needed)."""

    def __init__(self, slots: int) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"max_concurrent_ingest={slots!r} must be a positive integer, e.g. 4")
        self.slots = slots
        self.busy = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of this block; 503 with Retry-After when none is free."""
        if self.busy >= self.slots:
            raise ApiError(
                503,
                f"the server is working on {self.busy} request bodies already (its "
                f"--max-concurrent-ingest); retry after {RETRY_AFTER_SECONDS} s",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
