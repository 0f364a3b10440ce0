"""Who may send a body, and how slowly: the bounds that keep one client from starving another.

- **Pace.** A body must keep arriving: at any moment it may have taken `body_timeout` seconds
  plus one second per `min_body_rate` bytes received so far. Past that it is cut with 408 and
  the connection closed, so a client sending a byte a second holds a socket for seconds, not
  the server for ever.
- **Buffered bytes.** Bodies on their way in are counted in bytes (`buffer_bytes` in all, a
  declared Content-Length checked before anything is read); past the bound a request gets 503
  with `Retry-After`.
- **Slots.** A body costs memory several times its size while it is parsed (a 32 MB protobuf
  batch becomes hundreds of MB of Python objects), so at most `slots` bodies are parsed and
  stored at once; a body takes its slot only once it has fully arrived, so bodies trickling in
  hold none. One project (a token's project; every unscoped token counts as one) holds at most
  `slots - 1` of them, so another project always finds one. Past either bound: 503 with
  `Retry-After` (which the recorder's sender and OTLP exporters honour).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import Request

from markov_otel.errors import ConfigError
from markov_otel.server.bodies import ApiError, read_body
from markov_otel.server.options import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_INGEST,
    DEFAULT_MIN_BODY_RATE,
)

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT_INGEST",
    "DEFAULT_MIN_BODY_RATE",
    "IngestGate",
]

RETRY_AFTER_SECONDS = 1
WORKING_AFTER = 1.0
BUFFERED_BODIES = 4
"""Bodies of the largest size (max_body_bytes) that may be on their way in at once, a process."""


@dataclass
class _Held:
    bytes: int = 0


class IngestGate:
    """Counts bodies and bytes on the event loop (one loop, so no lock is needed)."""

    def __init__(
        self,
        slots: int,
        *,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        min_body_rate: int = DEFAULT_MIN_BODY_RATE,
        buffer_bytes: int | None = None,
    ) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"max_concurrent_ingest={slots!r} must be a positive integer, e.g. 4")
        if (
            isinstance(body_timeout, bool)
            or not isinstance(body_timeout, (int, float))
            or not (body_timeout > 0)
        ):
            raise ConfigError(
                f"body_timeout={body_timeout!r} must be a number of seconds > 0, e.g. 10"
            )
        if (
            isinstance(min_body_rate, bool)
            or not isinstance(min_body_rate, int)
            or min_body_rate < 1
        ):
            raise ConfigError(
                f"min_body_rate={min_body_rate!r} must be a positive number of bytes a second, "
                "e.g. 16384"
            )
        self.slots, self.share = slots, max(1, slots - 1)
        self.body_timeout, self.min_body_rate = float(body_timeout), min_body_rate
        self.buffer_bytes = buffer_bytes
        self.busy = 0
        self.owners: dict[str, int] = {}
        self.buffered = 0
        self.last_done = -WORKING_AFTER

    def working(self) -> bool:
        """True while a body is being stored, and for WORKING_AFTER s after the last one (a
        sender's next body is usually on its way): reads then pace themselves (lanes.py)."""
        return self.busy > 0 or time.monotonic() - self.last_done < WORKING_AFTER

    @asynccontextmanager
    async def admitted(self, request: Request, limit: int, owner: str) -> AsyncIterator[bytes]:
        """The request's whole body (read at the pace, within the byte bound; gzip inflated as
        `read_body` does), then one slot of `owner`'s for the block that works on it."""
        held = _Held()
        bound = self.buffer_bytes if self.buffer_bytes is not None else BUFFERED_BODIES * limit
        try:
            body = await read_body(request, limit, self._paced(request, held, bound))
            async with self.slot(owner):
                yield body
        finally:
            self.buffered -= held.bytes

    async def _paced(self, request: Request, held: _Held, bound: int) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; 408 when they come too slowly, 503 past `bound`."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and self.buffered + int(declared) > bound:
            raise self._full(f"{self.buffered} bytes of request bodies are arriving already")
        chunks = request.stream().__aiter__()
        start, got = time.monotonic(), 0
        while True:
            left = start + self.body_timeout + got / self.min_body_rate - time.monotonic()
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), max(left, 0.001))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise ApiError(
                    408,
                    f"the request body arrived too slowly ({got} bytes in "
                    f"{time.monotonic() - start:.0f} s): a body may take the server's "
                    f"--body-timeout ({self.body_timeout:g} s) plus a second per "
                    f"--min-body-rate ({self.min_body_rate} bytes); send it again, faster",
                    {"Connection": "close"},
                ) from None
            got += len(chunk)
            if self.buffered + len(chunk) > bound:
                raise self._full(f"{self.buffered} bytes of request bodies are arriving already")
            self.buffered += len(chunk)
            held.bytes += len(chunk)
            yield chunk

    @asynccontextmanager
    async def slot(self, owner: str = "") -> AsyncIterator[None]:
        """Hold one of `owner`'s slots for the block; 503 with Retry-After when none is free."""
        if self.busy >= self.slots:
            raise self._full(
                f"the server is working on {self.busy} request bodies already (its "
                "--max-concurrent-ingest)"
            )
        mine = self.owners.get(owner, 0)
        if mine >= self.share:
            raise self._full(
                f"project {owner!r} has {mine} of the server's {self.slots} request bodies in "
                "progress already (one project may hold all but one of --max-concurrent-ingest)"
            )
        self.busy += 1
        self.owners[owner] = mine + 1
        try:
            yield
        finally:
            self.busy -= 1
            self.last_done = time.monotonic()
            self.owners[owner] -= 1
            if not self.owners[owner]:
                del self.owners[owner]

    def _full(self, why: str) -> ApiError:
        return ApiError(
            503,
            f"{why}; retry after {RETRY_AFTER_SECONDS} s",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
