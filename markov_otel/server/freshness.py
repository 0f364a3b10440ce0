"""Validators for the reads live pages repeat: an ETag from what changes a recording, and 304.

A page polls a running recording every 2 s. Its answer changes only when a batch or a PATCH
lands, and each of those rewrites the recording's `updated_at` or its point count, so a tag
made of those (and of what else shapes the answer: the query, the base URL the links are made
from) is fresh until new data arrives. A client that presents it (`If-None-Match`, which the
browser sends itself for answers marked `Cache-Control: no-cache`) gets a bodiless 304 after one
indexed row read per recording, instead of the answer rebuilt. A client without the tag asking
what another asked since the last change gets the kept answer (`Answers`), so many readers of
one running recording cost one read per change, not one each; and readers asking the same while
that read runs wait for it rather than run their own (`Flights`).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["Answers", "Flights", "not_modified", "recordings_tag", "tagged"]

T = TypeVar("T")

REVALIDATE = "no-cache"  # keep it, but ask each time (with the tag)


def recordings_tag(recordings: Iterable[dict[str, Any]], *shape: str) -> str:
    """A weak ETag of the recordings' state and of `shape` (what else the answer depends on)."""
    digest = hashlib.blake2b(digest_size=12)
    for r in recordings:
        keys = r.get("keys")
        state = (r["recording_id"], r["updated_at"], r["points"], r["status"], len(keys or ()))
        digest.update(repr(state).encode())
    for part in shape:
        digest.update(b"\0" + part.encode())
    return f'W/"{digest.hexdigest()}"'


def not_modified(request: Request, tag: str) -> Response | None:
    """A 304 when the request presents `tag` (If-None-Match, weak comparison), else None."""
    presented = request.headers.get("if-none-match")
    if presented is None:
        return None
    offered = {t.strip().removeprefix("W/") for t in presented.split(",")}
    if "*" in offered or tag.removeprefix("W/") in offered:
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": REVALIDATE})
    return None


def tagged(response: Response, tag: str) -> Response:
    """`response` with its ETag, kept by the browser and revalidated on each request."""
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = REVALIDATE
    return response


class Answers:
    """The latest answers by tag (which names the query and the recordings' state), least
    recently used dropped first; at most `entries` of them and `max_bytes` in all."""

    def __init__(self, entries: int = 256, max_bytes: int = 16 << 20) -> None:
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._entries, self._max_bytes, self._bytes = entries, max_bytes, 0
        self._lock = threading.Lock()  # reader threads share it

    def get(self, tag: str) -> bytes | None:
        with self._lock:
            body = self._kept.get(tag)
            if body is not None:
                self._kept.move_to_end(tag)
            return body

    def put(self, tag: str, body: bytes) -> None:
        if len(body) > self._max_bytes // 4:
            return
        with self._lock:
            old = self._kept.pop(tag, None)
            self._bytes += len(body) - (0 if old is None else len(old))
            self._kept[tag] = body
            while len(self._kept) > self._entries or self._bytes > self._max_bytes:
                _, dropped = self._kept.popitem(last=False)
                self._bytes -= len(dropped)


class Flights:
    """One read in flight per key: who asks for a key while its read runs awaits that read's
    result instead of starting another (so a hundred pages queued in the read lane behind the
    same question cost one query). A read is its own task: a caller that goes away (a client
    that hung up) neither cancels it for the others nor leaves its error unretrieved. Joining
    a flight that began before the ask is as fresh as a live page needs: what committed since
    shows at its next poll."""

    def __init__(self) -> None:
        self._flying: dict[Hashable, asyncio.Task[Any]] = {}

    async def share(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`'s result, from the flight already asking for `key` if there is one."""
        task = self._flying.get(key)
        if task is None:
            task = asyncio.ensure_future(read())
            self._flying[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._flying.get(key) is task:
            del self._flying[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone
