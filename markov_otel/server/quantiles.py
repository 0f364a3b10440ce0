"""Quantiles of recorded arrays, from their stored ExponentialHistogram buckets, for the compare
page's overlay (`GET /api/v1/quantiles?ids=A,B&key=w`).

A point keeps counts per bucket, not values, so a quantile is estimated: the finite elements are
laid out bucket by bucket in value order (negative buckets from the most negative, the zero
bucket, then the positive ones; the outermost buckets clipped to the point's min and max), each
bucket's elements spread evenly across its interval (the smallest and largest at min and max),
and the quantile is numpy's default ("linear") interpolation between the two elements around
rank `q * (count - 1)`. The estimate
lies between the lower edge of the bucket holding numpy's lower element and the upper edge of
the one holding its upper element: within the bucket resolution (a relative width of
`2 ** 2 ** -scale - 1`). NaN and infinite elements are not in the buckets (otel/distributions.py),
so not in the quantiles either.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.rules import check_key
from markov_otel.server.api import json_response
from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError
from markov_otel.server.distributions import DISTRIBUTION
from markov_otel.server.lanes import ReadLane
from markov_otel.server.series import query_ids, visible
from markov_otel.server.storage import Store

__all__ = ["QUANTILES", "quantile_routes", "quantiles"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""What the overlay draws: the median in a p25-p75 band in a p5-p95 band."""
MAX_STEPS = 200
"""Steps answered per recording (evenly picked, the last always among them), as the run page's
heatmap draws at most that many columns."""

Bucket = tuple[float, float, int]
"""An interval of values (low, high) and how many elements lie in it."""


def quantiles(point: dict[str, Any], qs: Sequence[float] = QUANTILES) -> list[float] | None:
    """The quantiles `qs` (each in [0, 1]) of one stored distribution point (the API's shape),
    estimated from its buckets; None when it holds no finite element."""
    buckets = _ascending(point)
    ends = list(accumulate(n for _, _, n in buckets))
    count = ends[-1] if ends else 0
    if count == 0:
        return None

    def element(k: int) -> float:
        """Where the k-th smallest element (0-based) is placed: evenly within its bucket; the
        first and the last at min and max, which the point keeps exactly."""
        if k in (0, count - 1):
            return buckets[0][0] if k == 0 else buckets[-1][1]
        i = bisect_right(ends, k)
        low, high, n = buckets[i]
        j = k - (ends[i] - n)
        return low + (high - low) * (j + 0.5) / n

    out = []
    for q in qs:
        rank = q * (count - 1)
        below = math.floor(rank)
        a, b = element(below), element(min(below + 1, count - 1))
        out.append(a + (b - a) * (rank - below))
    return out


def _ascending(point: dict[str, Any]) -> list[Bucket]:
    """The point's non-empty buckets in value order, the outermost clipped to min and max."""
    scale = int(point.get("scale") or 0)

    def edge(index: int) -> float:
        try:
            return float(2.0 ** math.ldexp(index, -scale))  # base**index, base = 2**2**-scale
        except OverflowError:
            return math.inf

    buckets: list[Bucket] = []
    negative = point.get("negative") or {}
    offset = int(negative.get("offset") or 0)
    counts = list(negative.get("bucket_counts") or ())
    for i in reversed(range(len(counts))):  # the largest magnitude is the most negative
        if counts[i]:
            buckets.append((-edge(offset + i + 1), -edge(offset + i), int(counts[i])))
    if point.get("zero_count"):
        buckets.append((0.0, 0.0, int(point["zero_count"])))
    positive = point.get("positive") or {}
    offset = int(positive.get("offset") or 0)
    for i, n in enumerate(positive.get("bucket_counts") or ()):
        if n:
            buckets.append((edge(offset + i), edge(offset + i + 1), int(n)))
    low, high = point.get("min"), point.get("max")
    if buckets and isinstance(low, (int, float)) and isinstance(high, (int, float)):
        first, last = buckets[0], buckets[-1]
        buckets[0] = (max(first[0], low), min(first[1], high), first[2])
        last = buckets[-1]
        buckets[-1] = (max(last[0], low), min(last[1], high), last[2])
    return buckets


def run_quantiles(store: Store, recording: dict[str, Any], key: str) -> dict[str, Any]:
    """One recording's entry: its steps and, per step, QUANTILES' values (None: no finite
    element at that step)."""
    rid = recording["recording_id"]
    points = sorted(
        (attrs for _, attrs in store.events_named(rid, DISTRIBUTION) if attrs.get("key") == key),
        key=lambda p: p["step"],
    )
    if len(points) > MAX_STEPS:
        picks = sorted({round(i * (len(points) - 1) / (MAX_STEPS - 1)) for i in range(MAX_STEPS)})
        points = [points[i] for i in picks]
    return {
        "recording_id": rid,
        "name": recording.get("name") or "",
        "steps": [p["step"] for p in points],
        "values": [quantiles(p) for p in points],
    }


def quantile_routes(store: Store, reads: ReadLane) -> list[Route]:
    """`GET /api/v1/quantiles?ids=A,B&key=w`: per recording, the quantiles of a distribution
    key by step; the recordings a token may not see are 404s, as for series; read in `reads`."""

    async def answer(request: Request) -> Response:
        ids = query_ids(request.query_params)
        key = request.query_params.get("key")
        if not key:
            raise ApiError(400, "query parameter key is required, e.g. ?ids=RUN1,RUN2&key=weights")
        check_key(key, "query parameter key")
        grant: Grant = request.state.grant

        def read() -> dict[str, Any]:
            found = visible(store, grant, ids)
            series = [run_quantiles(store, r, key) for r in found]
            return {"key": key, "quantiles": list(QUANTILES), "series": series}

        return json_response(await reads.run(read))

    return [Route("/api/v1/quantiles", answer, methods=["GET"])]
