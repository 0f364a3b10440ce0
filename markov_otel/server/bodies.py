"""Request bodies: size limit (413), gzip, content types, JSON; `ApiError` for refusals.

A body is counted while it streams in, and a gzip body is inflated with the same limit, so neither
a large upload nor a small gzip bomb can take the server's memory. Every JSON body, REST or OTLP,
is decoded by `parse_json`, the one place that turns a body nested past the interpreter's
recursion limit into a 400.
"""

from __future__ import annotations

import gc
import json
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.requests import Request

__all__ = [
    "JSON",
    "PROTOBUF",
    "ApiError",
    "MalformedBody",
    "collector_paused",
    "fast_json_object",
    "json_document",
    "json_object",
    "otlp_content_type",
    "parse_json",
    "read_body",
]

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
GZIP_MAGIC = b"\x1f\x8b"
GZIP_WINDOW = 1 << 16
MAX_GZIP_MEMBERS = 1000
"""More members than any client writes (one each, usually); each costs a fresh inflater."""


class ApiError(Exception):
    """A refusal with its HTTP status, the reason sent back to the client, and extra headers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class MalformedBody(ValueError):
    """The body is not what the route takes; the message is the reason sent back with the 400."""


def parse_json(body: bytes, what: str) -> Any:
    """`json.loads(body)`, or MalformedBody saying why not (also for nesting too deep to parse)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedBody(
            f"{what}: body is nested too deeply to parse; nest JSON at most a few dozen levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what}: body is not JSON ({exc})") from exc


def otlp_content_type(request: Request) -> str:
    """The OTLP encoding of a request: JSON or protobuf; 415 for anything else."""
    raw = request.headers.get("content-type", "")
    ctype = raw.split(";", 1)[0].strip().lower()
    if ctype in (JSON, PROTOBUF):
        return ctype
    if ctype == "application/protobuf":
        return PROTOBUF
    raise ApiError(415, f"Content-Type {raw!r} is not supported; use {JSON} or {PROTOBUF}")


async def read_body(
    request: Request, limit: int, stream: AsyncIterator[bytes] | None = None
) -> bytes:
    """The whole body, inflated if gzip; 413 past `limit` bytes (before or after inflating).
    `stream` gives its chunks when not `request.stream()` (gate.py paces them)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"body of {length} bytes is larger than {_limit_named(limit)}")
    chunks, size = [], 0
    async for chunk in request.stream() if stream is None else stream:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is larger than {_limit_named(limit)}")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return gunzip(body, limit)
    if encoding not in ("", "identity"):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate every member of a gzip body (RFC 1952 §2.2: a gzip file is a series of members);
    413 when all of them together inflate past `limit`, 400 when it is not gzip, a member is
    cut short, anything but another member follows one, or there are absurdly many."""
    out: list[bytes] = []
    size, start, view = 0, 0, memoryview(body)
    for _ in range(MAX_GZIP_MEMBERS):
        member, start = inflate_member(view, start, limit - size, limit)
        size += len(member)
        out.append(member)
        if start == len(body):
            return b"".join(out)
        if body[start : start + 2] != GZIP_MAGIC:
            raise ApiError(
                400,
                f"gzip body has {len(body) - start} bytes after its last member that are not gzip",
            )
    raise ApiError(400, f"gzip body has more than {MAX_GZIP_MEMBERS} members")


def inflate_member(view: memoryview, start: int, budget: int, limit: int) -> tuple[bytes, int]:
    """The member at `view[start:]` inflated (413 past `budget` bytes, what is left of
    `limit`), and where the next one starts. It is fed a window at a time, so what zlib copies
    out after the member's end is one window, not the rest of the body (which made many small
    members cost quadratic time)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    size, at = 0, start
    while not inflater.eof:
        if at >= len(view):
            raise ApiError(400, "gzip body is truncated")
        window = view[at : at + GZIP_WINDOW]
        at += len(window)
        try:
            part = inflater.decompress(window, budget + 1 - size)  # never 0: that is no bound
        except zlib.error as exc:
            raise ApiError(400, f"body is not valid gzip ({exc})") from exc
        size += len(part)
        if size > budget or inflater.unconsumed_tail:
            raise ApiError(413, f"gzip body inflates past {_limit_named(limit)}")
        parts.append(part)
    return b"".join(parts), at - len(inflater.unused_data)


def _limit_named(limit: int) -> str:
    return (
        f"the limit of {limit} bytes (max_body_bytes, see GET /api/v1/limits; "
        "the server's --max-body-bytes)"
    )


def fast_json_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object body decoded by orjson (OTLP-JSON: megabytes a request); what orjson
    refuses (bare NaN tokens, nesting past 1024, lone surrogates, a BOM …) goes through
    `json_document`, so it is taken or refused exactly as the standard parser does."""
    try:
        with collector_paused():
            doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return json_document(body, what)
    if not isinstance(doc, dict):
        raise MalformedBody(f"{what}: body must be a JSON object, got {type(doc).__name__}")
    return doc


def json_document(body: bytes, what: str) -> dict[str, Any]:
    """A body that must be a JSON object; MalformedBody with the reason otherwise."""
    doc = parse_json(body, what)
    if not isinstance(doc, dict):
        raise MalformedBody(f"{what}: body must be a JSON object, got {type(doc).__name__}")
    return doc


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (REST routes); 400 with the reason when it is anything else."""
    body = await read_body(request, limit)
    try:
        return json_document(body, f"{request.method} {request.url.path}")
    except MalformedBody as exc:
        raise ApiError(400, str(exc)) from None


_paused_lock = threading.Lock()
_paused = 0  # parses in progress that paused the cyclic collector


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a body is decoded: the decoded tree has no cycles, and
    the collections its ~100k containers set off would cost a third of the decode. Concurrent
    decodes share the pause; a collector disabled by someone else is left as it was."""
    global _paused
    with _paused_lock:
        if _paused == 0 and not gc.isenabled():
            owner = False
        else:
            _paused += 1
            owner = True
            gc.disable()
    try:
        yield
    finally:
        if owner:
            with _paused_lock:
                _paused -= 1
                if _paused == 0:
                    gc.enable()
