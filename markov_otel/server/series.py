"""`GET /api/v1/series`: one key of several recordings, downsampled in the database for charts.

The answer keeps each output bucket's smallest and largest finite point and its first non-finite
one, so a spike survives any `max_points`; `since_step` returns only newer points (live pages
append them), `min_step`/`max_step` read a zoomed range at full resolution. The answer carries
an ETag (`freshness.py`): asked again with it before new points land, the answer is a 304, and
the same query from another reader is answered from the kept answer.

What one request may cost is bounded: at most `MAX_IDS` recordings, `MAX_POINTS_LIMIT` points a
series and `MAX_POINTS_A_RESPONSE` points in all (ids x max_points), each read in the read lane.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.rules import STEP_MAX, STEP_MIN, valid_id
from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError
from markov_otel.server.freshness import Answers, not_modified, recordings_tag, tagged
from markov_otel.server.lanes import ReadLane
from markov_otel.server.storage import Store

__all__ = [
    "DEFAULT_MAX_POINTS",
    "MAX_IDS",
    "MAX_POINTS_A_RESPONSE",
    "MAX_POINTS_LIMIT",
    "series_routes",
]

DEFAULT_MAX_POINTS = 1000
MAX_POINTS_LIMIT = 100_000
MAX_POINTS_A_RESPONSE = 100_000  # ids x max_points: a comparison of 100 runs at the default
MIN_MAX_POINTS = 10
MAX_IDS = 100


@dataclass(frozen=True)
class SeriesQuery:
    """The validated query string of one series request."""

    ids: tuple[str, ...]
    key: str
    max_points: int
    since_step: int | None
    min_step: int | None
    max_step: int | None


def series_routes(store: Store, reads: ReadLane) -> list[Route]:
    """The series route, bound to `store`; it reads in `reads`."""

    kept = Answers()

    async def series(request: Request) -> Response:
        query = parse_query(request)
        grant: Grant = request.state.grant

        def answer() -> Response:
            recordings = visible(store, grant, query.ids)
            tag = recordings_tag(recordings, str(request.url.query))
            unchanged = not_modified(request, tag)
            if unchanged is not None:  # nothing new since the client's copy: no points read
                return unchanged
            body = kept.get(tag)  # asked by another reader since the last change
            if body is None:
                doc = series_document(store, recordings, query)
                body = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
                kept.put(tag, body)
            return tagged(Response(body, media_type="application/json"), tag)

        return await reads.run(answer)

    return [Route("/api/v1/series", series, methods=["GET", "HEAD"])]


def query_ids(params: Any) -> tuple[str, ...]:
    """The `ids` query parameter (comma-separated, each once, in order); 400 naming what is bad."""
    ids = tuple(dict.fromkeys(i.strip() for i in (params.get("ids") or "").split(",") if i.strip()))
    if not ids:
        raise ApiError(400, "query parameter ids is required, e.g. ?ids=RUN1,RUN2&key=loss")
    if len(ids) > MAX_IDS:
        raise ApiError(400, f"ids names {len(ids)} recordings; at most {MAX_IDS} per request")
    for rid in ids:
        if not valid_id(rid):
            raise ApiError(400, f"recording id {rid[:80]!r} in ids is not valid (protocol.md)")
    return ids


def parse_query(request: Request) -> SeriesQuery:
    """The query of a series request; 400 naming the parameter and an example if it is bad."""
    params = request.query_params
    ids = query_ids(params)
    key = params.get("key")
    if not key or "\x00" in key:
        raise ApiError(400, "query parameter key is required (no NUL characters), e.g. &key=loss")
    max_points = _integer(params, "max_points", MIN_MAX_POINTS, MAX_POINTS_LIMIT)
    max_points = DEFAULT_MAX_POINTS if max_points is None else max_points
    if len(ids) * max_points > MAX_POINTS_A_RESPONSE:
        raise ApiError(
            400,
            f"{len(ids)} recordings x max_points={max_points} is more than "
            f"{MAX_POINTS_A_RESPONSE} points in one answer; ask for fewer ids or fewer points, "
            f"e.g. max_points={max(MIN_MAX_POINTS, MAX_POINTS_A_RESPONSE // len(ids))}",
        )
    return SeriesQuery(
        ids=ids,
        key=key,
        max_points=max_points,
        since_step=_integer(params, "since_step", STEP_MIN, STEP_MAX),
        min_step=_integer(params, "min_step", STEP_MIN, STEP_MAX),
        max_step=_integer(params, "max_step", STEP_MIN, STEP_MAX),
    )


def _integer(params: Any, name: str, low: int, high: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}={raw[:40]!r} must be an integer, e.g. {name}={low}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}={value} must be between {low} and {high}")
    return value


def read_series(store: Store, grant: Grant, query: SeriesQuery) -> dict[str, Any]:
    """The answer document; 404 for an unknown id and for one of a project the token can't see."""
    return series_document(store, visible(store, grant, query.ids), query)


def visible(store: Store, grant: Grant, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """The recordings of `ids`; 404 for an unknown one and for one the token may not see."""
    recordings = []
    for rid in ids:
        recording = store.get(rid)
        # Another project's recording is answered exactly like a missing one: no existence leak.
        if recording is None or not grant.allows(recording.get("project_id")):
            raise ApiError(404, f"no recording {rid!r}")
        recordings.append(recording)
    return recordings


def series_document(
    store: Store, recordings: list[dict[str, Any]], query: SeriesQuery
) -> dict[str, Any]:
    """The answer for recordings already found visible."""
    return {
        "key": query.key,
        "max_points": query.max_points,
        "series": [one_series(store, r, query) for r in recordings],
    }


def one_series(store: Store, recording: dict[str, Any], query: SeriesQuery) -> dict[str, Any]:
    """One recording's entry: its identity, points `[step, value, time_unix_nano]` and last."""
    rid = recording["recording_id"]
    out: dict[str, Any] = {
        "recording_id": rid,
        "name": recording.get("name") or "",
        "status": recording.get("status") or "",
        "points": [],
        "bucket_steps": 1,
        "first_step": None,
        "last": None,
    }
    span = store.step_range(rid, query.key) if query.key in recording.get("keys", ()) else None
    if span is None:
        return out
    out["first_step"] = span[0]
    last = store.last_point(rid, query.key)
    out["last"] = list(last) if last is not None else None
    lo, hi = span
    for bound in (query.min_step, None if query.since_step is None else query.since_step + 1):
        lo = lo if bound is None else max(lo, bound)
    hi = hi if query.max_step is None else min(hi, query.max_step)
    if lo <= hi:
        points, width = store.downsampled(rid, query.key, lo, hi, query.max_points)
        out["points"] = [list(p) for p in points]
        out["bucket_steps"] = width
    return out
