"""`GET /api/v1/history`: whole series of several recordings in one answer, for read.history().

`?ids=RUN1,RUN2&key=loss&key=acc` (no `key`: every key of each recording). Each key's points
come in step then time order as three base64 strings of little-endian arrays: `step` (int64),
`value` (float64; NaN and ±inf as themselves) and `time` (int64 ns). That is 32 characters a
point where JSON numbers take about 45, and the reader turns them into arrays with
`numpy.frombuffer`, without a Python object per point. `max_points` downsamples each key as
/api/v1/series does: each bucket's smallest and largest point, so a spike survives. A process
keeps what it packed (PackCache, 256 MiB) while the recording is unchanged: reading the same
finished runs again skips the database.
"""

from __future__ import annotations

import base64
import functools
import json
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError
from markov_otel.server.series import MAX_POINTS_LIMIT, MIN_MAX_POINTS, query_ids
from markov_otel.server.storage import Store

__all__ = ["history_routes", "pack", "read_history"]


CACHE_BYTES = 256 * 1024 * 1024
"""Packed series a server process keeps for repeated reads (a notebook cell run again)."""


class PackCache:
    """Packed series by (recording, key, max_points), each valid while its recording's point
    count and last change are what they were when packed; least recently used go first."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], dict[str, Any]]] = (
            OrderedDict()
        )

    def get(
        self, name: tuple[Any, ...], version: tuple[Any, ...], build: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        with self._lock:
            kept = self._kept.get(name)
            if kept is not None and kept[0] == version:
                self._kept.move_to_end(name)
                return kept[1]
        packed = build()  # outside the lock: other reads go on meanwhile
        cost = 3 * len(packed["value"])
        with self._lock:
            old = self._kept.pop(name, None)
            self.size -= 0 if old is None else 3 * len(old[1]["value"])
            if cost <= self.max_bytes:
                self._kept[name] = (version, packed)
                self.size += cost
            while self.size > self.max_bytes:
                _, (_, dropped) = self._kept.popitem(last=False)
                self.size -= 3 * len(dropped["value"])
        return packed


def history_routes(store: Store) -> list[Route]:
    """The history route, bound to `store`."""
    cache = PackCache()

    async def history(request: Request) -> Response:
        ids, keys, max_points = parse_query(request)
        grant: Grant = request.state.grant
        doc = await run_in_threadpool(read_history, store, grant, ids, keys, max_points, cache)
        body = json.dumps(doc, separators=(",", ":"))
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

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


def read_history(
    store: Store,
    grant: Grant,
    ids: Sequence[str],
    keys: list[str] | None,
    max_points: int | None,
    cache: PackCache | None = None,
) -> dict[str, Any]:
    """The answer; 404 for an unknown id and for one of a project the token can't see."""
    recordings = []
    for rid in ids:
        recording = store.get(rid)
        # Another project's recording is answered exactly like a missing one: no existence leak.
        if recording is None or not grant.allows(recording.get("project_id")):
            raise ApiError(404, f"no recording {rid!r}")
        recordings.append(recording)
    runs = []
    for recording in recordings:
        rid, held = recording["recording_id"], set(recording.get("keys") or ())
        wanted = [k for k in (keys if keys is not None else sorted(held)) if k in held]
        version = (recording.get("points"), recording.get("updated_at"))
        packed = {}
        for key in wanted:
            build = functools.partial(_series, store, rid, key, max_points)
            packed[key] = (
                build() if cache is None else cache.get((rid, key, max_points), version, build)
            )
        runs.append({"recording_id": rid, "keys": packed})
    return {"max_points": max_points, "runs": runs}


def _series(store: Store, rid: str, key: str, max_points: int | None) -> dict[str, Any]:
    if max_points is None:
        return pack(store.point_rows(rid, key))
    span = store.step_range(rid, key)
    if span is None:
        return pack([])
    points, _ = store.downsampled(rid, key, span[0], span[1], max_points)
    return pack(points)


def pack(points: Sequence[tuple[int, float | int | str, int]]) -> dict[str, Any]:
    """Points (step, value or the protocol's non-finite text, time) as the three arrays."""
    try:
        numbers = array("d", map(_VALUE, points))
    except TypeError:  # a non-finite value, kept as text by the store
        numbers = array("d", (float(v) if isinstance(v, str) else v for v in map(_VALUE, points)))
    columns = (array("q", map(_STEP, points)), numbers, array("q", map(_TIME, points)))
    if sys.byteorder == "big":
        for column in columns:
            column.byteswap()
    step, value, time = (base64.b64encode(c.tobytes()).decode("ascii") for c in columns)
    return {"n": len(points), "step": step, "value": value, "time": time}


_STEP, _VALUE, _TIME = itemgetter(0), itemgetter(1), itemgetter(2)  # map(): no Python loop
