"""A recorded array as one OTLP ExponentialHistogram data point: bucketed with numpy, encoded.

Runs on the flusher thread, never the caller's (add_record only copies the array:
recording/arrays.py). numpy is imported here, and this module only when an array was recorded,
so numpy stays an optional dependency.

The point: `count`, `sum`, `min`, `max` and `zeroCount` of the finite elements; `positive` and
`negative` buckets at the finest scale (at most 20) that keeps each side within `MAX_BUCKETS`
(OTel's default); `markov.step`, and `markov.key` where the metric name is sanitised, like every
gauge point. OTLP's count is the sum of the buckets, so NaN, +inf and -inf elements are not in
it (nor in the sum): they are counted in the attributes `markov.nan_count`,
`markov.posinf_count` and `markov.neginf_count`, present when not zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from markov_otel import __version__
from markov_otel.otel.encoding import attributes_json, metric_name

MAX_BUCKETS = 160
"""Buckets a side (positive, negative) keeps at most: OTel SDK's default max_size."""
MAX_SCALE = 20
MIN_SCALE = -10
DELTA = 1
"""AGGREGATION_TEMPORALITY_DELTA: each point describes its own array, not a running total."""


@dataclass(frozen=True)
class Histogram:
    """The bucketed population of one array."""

    count: int
    sum: float
    min: float | None
    max: float | None
    zero_count: int
    scale: int
    positive: tuple[int, list[int]]  # offset, counts
    negative: tuple[int, list[int]]
    nan: int = 0
    posinf: int = 0
    neginf: int = 0


CHUNK = 1 << 16
"""Elements bucketed per numpy call: each call holds the GIL briefly (~0.1 ms), so the training
thread waits for this thread at most that long, not for a whole 1M-element pass."""


def bucket(values: Any) -> Histogram:
    """The exponential histogram of an array's elements (vectorised: numpy ufuncs, chunk by
    chunk; indexes at MAX_SCALE first, then all shifted to the common scale)."""
    flat = np.asarray(values).ravel()
    pos: list[Any] = []
    neg: list[Any] = []
    count = zero_count = nan = posinf = neginf = 0
    total, low, high = 0.0, math.inf, -math.inf
    for start in range(0, flat.size, CHUNK):
        a = flat[start : start + CHUNK].astype(np.float64)
        finite = np.isfinite(a)
        if not finite.all():
            nan += int(np.count_nonzero(np.isnan(a)))
            posinf += int(np.count_nonzero(a == np.inf))
            neginf += int(np.count_nonzero(a == -np.inf))
            a = a[finite]
        if not a.size:
            continue
        positive, negative = a[a > 0], a[a < 0]
        pos.append(_indexes(positive))
        neg.append(_indexes(-negative))
        count += a.size
        zero_count += a.size - positive.size - negative.size
        total += float(a.sum())
        low, high = min(low, float(a.min())), max(high, float(a.max()))
    shift = max(_shift(pos), _shift(neg))
    return Histogram(
        count=count,
        sum=total,
        min=low if count else None,
        max=high if count else None,
        zero_count=zero_count,
        scale=MAX_SCALE - shift,
        positive=_buckets(pos, shift),
        negative=_buckets(neg, shift),
        nan=nan,
        posinf=posinf,
        neginf=neginf,
    )


def _indexes(magnitudes: Any) -> Any:
    """Bucket indexes at MAX_SCALE: bucket i holds (base**i, base**(i+1)], base = 2**2**-20.
    log2 is exact at powers of two, so they land in the bucket they close."""
    return np.ceil(np.log2(magnitudes) * float(1 << MAX_SCALE)).astype(np.int64) - 1


def _shift(chunks: list[Any]) -> int:
    """How many halvings of the scale bring these buckets within MAX_BUCKETS: one scale down
    merges buckets 2j and 2j+1 into j, so an index there is the index here >> 1."""
    chunks = [c for c in chunks if c.size]
    if not chunks:
        return 0
    lo, hi = min(int(c.min()) for c in chunks), max(int(c.max()) for c in chunks)
    shift = 0
    while (hi >> shift) - (lo >> shift) + 1 > MAX_BUCKETS and shift < MAX_SCALE - MIN_SCALE:
        shift += 1
    return shift


def _buckets(chunks: list[Any], shift: int) -> tuple[int, list[int]]:
    chunks = [c >> shift for c in chunks if c.size]
    if not chunks:
        return 0, []
    offset = min(int(c.min()) for c in chunks)
    width = max(int(c.max()) for c in chunks) - offset + 1
    counts = np.zeros(width, dtype=np.int64)
    for c in chunks:
        counts += np.bincount(c - offset, minlength=width)
    return offset, counts.tolist()


def point_json(
    time_ns: int, step: int, key: str, histogram: Histogram, extra: dict[str, Any]
) -> dict[str, Any]:
    """One OTLP-JSON ExponentialHistogramDataPoint."""
    attributes: dict[str, Any] = {"markov.step": step, **extra}
    for name, n in (
        ("markov.nan_count", histogram.nan),
        ("markov.posinf_count", histogram.posinf),
        ("markov.neginf_count", histogram.neginf),
    ):
        if n:
            attributes[name] = n
    point: dict[str, Any] = {
        "timeUnixNano": str(time_ns),
        "attributes": json.loads(attributes_json(attributes)),
        "count": str(histogram.count),
        "sum": histogram.sum if math.isfinite(histogram.sum) else _inf(histogram.sum),
        "scale": histogram.scale,
        "zeroCount": str(histogram.zero_count),
        "positive": _side(histogram.positive),
        "negative": _side(histogram.negative),
    }
    if histogram.min is not None:
        point["min"], point["max"] = histogram.min, histogram.max
    return point


def _inf(value: float) -> str:
    """A finite array's sum may still overflow a double: OTLP-JSON's string for it."""
    return "Infinity" if value > 0 else "-Infinity"


def _side(buckets: tuple[int, list[int]]) -> dict[str, Any]:
    offset, counts = buckets
    return {"offset": offset, "bucketCounts": [str(c) for c in counts]}


Item = tuple[int, int, str, Any]
"""One recorded array: time_ns, step, key, the caller's copy."""


def encode_lines(
    items: Sequence[Item], resource: str, max_bytes: int
) -> Iterator[tuple[bytes, int]]:
    """MetricsData lines (newline included) of one point per item, each line within
    `max_bytes` (a point alone is at most a few kB: 2 x 160 buckets), with their points."""
    points: list[tuple[str, dict[str, Any]]] = []
    size = 0
    for time_ns, step, key, values in items:
        name = metric_name(key)
        extra = {"markov.key": key} if name != key else {}
        point = point_json(time_ns, step, key, bucket(values), extra)
        weight = len(json.dumps(point)) + len(name) + 100
        if points and size + weight > max_bytes - len(resource) - 200:
            yield _line(points, resource), len(points)
            points, size = [], 0
        points.append((name, point))
        size += weight
    if points:
        yield _line(points, resource), len(points)


def _line(points: list[tuple[str, dict[str, Any]]], resource: str) -> bytes:
    metrics: dict[str, list[dict[str, Any]]] = {}
    for name, point in points:
        metrics.setdefault(name, []).append(point)
    scope = {"name": "markov_otel", "version": __version__}
    doc = {
        "resourceMetrics": [
            {
                "resource": {"attributes": "@RESOURCE@"},
                "scopeMetrics": [
                    {
                        "scope": scope,
                        "metrics": [
                            {
                                "name": name,
                                "exponentialHistogram": {
                                    "dataPoints": data_points,
                                    "aggregationTemporality": DELTA,
                                },
                            }
                            for name, data_points in metrics.items()
                        ],
                    }
                ],
            }
        ]
    }
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    return text.replace('"@RESOURCE@"', resource, 1).encode("utf-8") + b"\n"
