"""The common OTLP-JSON metrics body, decoded by msgspec into typed structs: the fast path.

The recorder's spool lines (and most OTLP-JSON exporters' gauges) hold only gauge or sum metrics
whose every point carries one attribute, `markov.step` as an int64 string, a time string, and a
float `asDouble` (or, in every point of a metric, an `asInt` string). msgspec decodes such a body
straight into small untracked structs, checking those types as it goes, at ~5x the speed of
building orjson's dicts (which then had to be walked and checked again).

Anything else (another attribute, a non-finite "NaN", a histogram, a null where a list belongs,
bad JSON …) makes `parse_common` return None, and the general walk of `otlp.py` takes the body
from the start: what it refuses, and how it answers a body of any other shape, stay exactly as
they were. The resource is kept as raw JSON and read by orjson, so its attributes decode as the
general walk decodes them. tests/server/test_otlp_json.py holds the two paths to the same answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter
from typing import Any, Literal

import msgspec
import orjson

from markov_otel.rules import INT64_MAX, INT64_MIN
from markov_otel.server.bodies import collector_paused
from markov_otel.server.otlp import (
    JSON_SHAPE_ERRORS,
    Batch,
    Columns,
    ResourceBatch,
    check_columns,
    json_attributes,
)

__all__ = ["parse_common"]


class _StepValue(msgspec.Struct, gc=False):
    intValue: str


class _StepAttribute(msgspec.Struct, gc=False):
    key: Literal["markov.step"]
    value: _StepValue


_ABSENT: Any = msgspec.UNSET  # tells a missing field from a JSON null


class _Point(msgspec.Struct, gc=False):
    attributes: tuple[_StepAttribute]
    timeUnixNano: str
    asDouble: float = _ABSENT  # a JSON integer is taken as its float, as the general walk does
    asInt: str = _ABSENT


class _Data(msgspec.Struct, gc=False):
    dataPoints: list[_Point]


class _Metric(msgspec.Struct, gc=False):
    name: str
    gauge: _Data | None = _ABSENT
    sum: _Data | None = _ABSENT
    histogram: Any = _ABSENT
    exponentialHistogram: Any = _ABSENT
    summary: Any = _ABSENT


class _ScopeMetrics(msgspec.Struct, gc=False):
    metrics: list[_Metric] = []


class _ResourceMetrics(msgspec.Struct, gc=False):
    resource: msgspec.Raw = msgspec.Raw(b"null")
    scopeMetrics: list[_ScopeMetrics] = []


class _Request(msgspec.Struct, gc=False):
    resourceMetrics: list[_ResourceMetrics] = []


_DECODER = msgspec.json.Decoder(_Request)
_ATTRIBUTES = attrgetter("attributes")
_TIME = attrgetter("timeUnixNano")
_DOUBLE = attrgetter("asDouble")
_INT = attrgetter("asInt")


def parse_common(body: bytes) -> Batch | None:
    """The batch of a body of the common shape (see the module's docstring); None otherwise."""
    try:
        with collector_paused():
            request = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    batch = Batch([])
    for rm in request.resourceMetrics:
        attributes = _resource_attributes(rm.resource)
        metrics = [m for sm in rm.scopeMetrics for m in sm.metrics]
        columns = [_columns(metric) for metric in metrics]
        if attributes is None or None in columns:
            return None
        out = ResourceBatch(attributes)
        out.points = _checked(batch, columns)
        batch.resources.append(out)
    return batch


def _resource_attributes(raw: msgspec.Raw) -> dict[str, Any] | None:
    """The resource's attributes as the general walk reads them; None where it would refuse."""
    try:
        resource = orjson.loads(bytes(raw)) or {}
        return json_attributes(resource.get("attributes"))
    except (orjson.JSONDecodeError, *JSON_SHAPE_ERRORS):
        return None


def _columns(metric: _Metric) -> Columns | None:
    """The metric as columns; None when it is not one gauge or sum of points."""
    others = metric.histogram, metric.exponentialHistogram, metric.summary
    if any(other is not _ABSENT for other in others):
        return None
    data = (
        metric.gauge if metric.sum is _ABSENT else metric.sum if metric.gauge is _ABSENT else None
    )
    if data is None or data is _ABSENT or not data.dataPoints:
        return None
    points = data.dataPoints
    try:
        steps = list(map(int, [a[0].value.intValue for a in map(_ATTRIBUTES, points)]))
        times = list(map(int, map(_TIME, points)))
        values = _values(points)
    except ValueError:  # "", "1.5", …: the general walk says why
        return None
    return None if values is None else Columns(metric.name, steps, values, times)


def _values(points: list[_Point]) -> list[int | float] | None:
    """Every point's asDouble (as the walk, which reads asDouble first), or else every point's
    asInt within int64; None for a mix, a point of neither, an asInt out of range."""
    doubles: list[Any] = list(map(_DOUBLE, points))
    if _ABSENT not in doubles:
        return doubles
    if doubles.count(_ABSENT) != len(doubles):
        return None
    texts = list(map(_INT, points))
    if _ABSENT in texts:
        return None
    ints: list[Any] = list(map(int, texts))
    return ints if min(ints) >= INT64_MIN and max(ints) <= INT64_MAX else None


def _checked(batch: Batch, columns: list[Columns | None]) -> Iterator[Columns]:
    """The columns, each checked against the rules as the store walks them (as otlp.py does)."""
    for column in columns:
        assert column is not None
        yield check_columns(batch, column)
