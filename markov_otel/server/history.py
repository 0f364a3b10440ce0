"""`GET /api/v1/history`: whole series of several recordings in one answer, for read.history().

`?ids=RUN1,RUN2&key=loss&key=acc` (no `key`: every key of each recording). Each key's points
come in step then time order, packed (blocks.py): `n` int64 steps, `n` float64 values (NaN, ±inf
and -0.0 as themselves) and `n` int64 times (ns), little-endian.

Two forms of the same answer:

- `Accept: application/x-markov-history` (read.history): the packed columns, streamed a
  recording at a time; each recording a frame: the length (uint32) of a JSON header
  `{"recording_id", "keys": [[key, n], ...]}`, the header, then each key in the header's
  order, packed. The reader takes each column with one `numpy.frombuffer`: no JSON
  number, base64 or Python object per point on either side.
- otherwise JSON, each key's points as three base64 strings of little-endian arrays (`step`,
  `value`, `time`), for clients without the binary reader.

`max_points` downsamples each key as /api/v1/series does: each bucket's smallest and largest
point, so a spike survives. Reads run in the read lane (lanes.py), a recording at a time. A
process keeps what it packed (PackCache, 256 MiB) while the recording is unchanged: reading the
same finished runs again skips the database.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from markov_otel.server.auth import Grant
from markov_otel.server.blocks import columns, count, pack
from markov_otel.server.bodies import ApiError
from markov_otel.server.lanes import ReadLane
from markov_otel.server.series import MAX_POINTS_LIMIT, MIN_MAX_POINTS, query_ids, visible
from markov_otel.server.storage import Store

__all__ = [
    "BINARY",
    "PackCache",
    "frame",
    "history_routes",
    "read_history",
    "read_run",
]

BINARY = "application/x-markov-history"
"""The media type of the binary form (asked for with Accept)."""
CACHE_BYTES = 256 * 1024 * 1024
"""Packed series a server process keeps for repeated reads (a notebook cell run again)."""

Run = tuple[str, dict[str, bytes]]  # (recording id, {key: its points, packed})


class PackCache:
    """Packed series by (recording, key, max_points), each valid while its recording's point
    count and last change are what they were when packed; least recently used go first."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], bytes]] = OrderedDict()

    def get(
        self, name: tuple[Any, ...], version: tuple[Any, ...], build: Callable[[], bytes]
    ) -> bytes:
        with self._lock:
            kept = self._kept.get(name)
            if kept is not None and kept[0] == version:
                self._kept.move_to_end(name)
                return kept[1]
        packed = build()  # outside the lock: other reads go on meanwhile
        with self._lock:
            old = self._kept.pop(name, None)
            self.size -= 0 if old is None else len(old[1])
            if len(packed) <= self.max_bytes:
                self._kept[name] = (version, packed)
                self.size += len(packed)
            while self.size > self.max_bytes:
                _, (_, dropped) = self._kept.popitem(last=False)
                self.size -= len(dropped)
        return packed


def history_routes(store: Store, reads: ReadLane) -> list[Route]:
    """The history route, bound to `store`; its reads run in `reads`."""
    cache = PackCache()

    async def history(request: Request) -> Response:
        ids, keys, max_points = parse_query(request)
        grant: Grant = request.state.grant
        # Every id is checked before the first byte: a 404 cannot follow a streamed 200.
        found = await reads.run(visible, store, grant, tuple(ids))
        one = functools.partial(read_run, store, keys=keys, max_points=max_points, cache=cache)
        headers = {"Cache-Control": "no-store"}
        if BINARY in request.headers.get("accept", ""):

            async def frames() -> AsyncIterator[bytes]:
                for recording in found:
                    yield frame(await reads.run(one, recording))

            return StreamingResponse(frames(), media_type=BINARY, headers=headers)
        runs = [await reads.run(one, recording) for recording in found]
        body = json.dumps(json_document(runs, max_points), separators=(",", ":"))
        return Response(body, media_type="application/json", headers=headers)

    return [Route("/api/v1/history", history, methods=["GET"])]


def parse_query(request: Request) -> tuple[list[str], list[str] | None, int | None]:
    """ids, keys (None: all) and max_points; 400 naming the parameter when one is bad."""
    params = request.query_params
    ids = list(query_ids(params))
    keys = list(dict.fromkeys(params.getlist("key"))) or None
    if keys is not None and any(not k or "\x00" in k for k in keys):
        raise ApiError(400, "query parameter key must be a non-empty key without NUL characters")
    raw = params.get("max_points")
    if raw is None or raw == "":
        return ids, keys, None
    try:
        max_points = int(raw)
    except ValueError:
        raise ApiError(400, f"max_points={raw[:40]!r} must be an integer, e.g. 1000") from None
    if not MIN_MAX_POINTS <= max_points <= MAX_POINTS_LIMIT:
        raise ApiError(
            400, f"max_points={max_points} must be between {MIN_MAX_POINTS} and {MAX_POINTS_LIMIT}"
        )
    return ids, keys, max_points


def read_run(
    store: Store,
    recording: dict[str, Any],
    *,
    keys: list[str] | None,
    max_points: int | None,
    cache: PackCache | None = None,
) -> Run:
    """One recording's keys (those of `keys` it has; None: all), each packed."""
    rid, held = recording["recording_id"], set(recording.get("keys") or ())
    wanted = [k for k in (keys if keys is not None else sorted(held)) if k in held]
    version = (recording.get("points"), recording.get("updated_at"))
    packed = {}
    for key in wanted:
        build = functools.partial(_series, store, rid, key, max_points)
        packed[key] = (
            build() if cache is None else cache.get((rid, key, max_points), version, build)
        )
    return rid, packed


def read_history(
    store: Store,
    grant: Grant,
    ids: Sequence[str],
    keys: list[str] | None,
    max_points: int | None,
    cache: PackCache | None = None,
) -> list[Run]:
    """Every run of `ids`, in that order (404 for an unknown one and for one the token may not
    see, as series.visible answers)."""
    return [
        read_run(store, recording, keys=keys, max_points=max_points, cache=cache)
        for recording in visible(store, grant, tuple(ids))
    ]


def frame(run: Run) -> bytes:
    """One recording in the binary form: header length, JSON header, each key packed."""
    rid, packed = run
    header = json.dumps({"recording_id": rid, "keys": [[k, count(r)] for k, r in packed.items()]})
    head = header.encode()
    return b"".join([len(head).to_bytes(4, "little"), head, *packed.values()])


def json_document(runs: list[Run], max_points: int | None) -> dict[str, Any]:
    """The JSON form: each key's packed columns as three base64 strings."""
    return {
        "max_points": max_points,
        "runs": [
            {"recording_id": rid, "keys": {key: _columns(r) for key, r in packed.items()}}
            for rid, packed in runs
        ],
    }


def _columns(packed: bytes) -> dict[str, Any]:
    b64 = (base64.b64encode(c).decode("ascii") for c in columns(packed))
    return {"n": count(packed), **dict(zip(("step", "value", "time"), b64, strict=True))}


def _series(store: Store, rid: str, key: str, max_points: int | None) -> bytes:
    if max_points is None:
        return store.packed_points(rid, key)
    span = store.step_range(rid, key)
    if span is None:
        return b""
    points, _ = store.downsampled(rid, key, span[0], span[1], max_points)
    return pack(points)
