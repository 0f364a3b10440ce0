"""Parse OTLP/HTTP metrics bodies (OTLP-JSON and protobuf) into plain rows for the store.

OTLP-JSON is walked as dicts after `json.loads` (int64 as decimal strings, non-finite doubles as
"NaN"/"Infinity"/"-Infinity"); `json_format.Parse` is ~10x slower and rejects nothing we need
rejected. Protobuf bodies go through `ParseFromString`. Both paths produce the same `Batch`.

Points come out a metric at a time as `Columns` (a list of steps, one of values, one of times),
and the common metric (every point has only `markov.step` and a float value, as the recorder
writes them) is walked a column at a time: list comprehensions and a type check per column,
not a Python loop per point. Record keys, steps and times are checked with `markov_otel.rules`
(a ConfigError is the 400's reason): a key once per batch, steps and times with one min() and
one max() per column.

Metrics are produced lazily (`ResourceBatch.points` is a generator walked once, while the batch
is stored), so a large body is held as its parsed message plus one metric's columns, not also as
a tuple per point: a 32 MB protobuf batch would otherwise cost ~400 MB. A malformed point found
on the way raises MalformedBody or ConfigError from inside the store's transaction, which rolls
back.

A body of the common shape (the recorder's) is decoded by msgspec instead (`otlp_json.py`); this
module's walk takes every other body. A protobuf metric of common points is read off its
serialized bytes (`otlp_wire.py`); the wrapper walk here takes every other metric. OTLP-JSON
bodies are decoded by orjson (`fast_json_object`; ~4x the speed of `json.loads`). orjson reads
an integer past 64 bits as a double, so int64 fields (`json_int`) refuse a JSON number that
arrives as a double instead of rounding it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from markov_otel.errors import ConfigError
from markov_otel.rules import INT64_MAX, INT64_MIN, TIME_MAX, check_key, check_step, check_time
from markov_otel.server.bodies import MalformedBody, fast_json_object, json_document
from markov_otel.server.otlp_wire import wire_points
from markov_otel.server.records import NON_FINITE

__all__ = [
    "MAX_ATTRIBUTES_TEXT",
    "Batch",
    "Columns",
    "MalformedBody",
    "ResourceBatch",
    "attributes_identity",
    "check_columns",
    "checked_time",
    "parse_metrics",
    "value_of",
]

STEP_ATTR = "markov.step"
KEY_ATTR = "markov.key"
MAX_ATTRIBUTES_TEXT = 1024
"""Longest attribute text a point's row keeps as is (`attributes_identity`)."""


@dataclass(slots=True)
class Columns:
    """The points of one record key from one metric, a list per field (point i is index i);
    values are int or float, possibly non-finite."""

    key: str
    steps: list[int]
    values: list[int | float]
    times: list[int]
    attrs: str | None = None
    """The points' attributes but `markov.step` and `markov.key`, as `attributes_identity`
    writes them; None when they have none (the recorder's points of a plain key)."""


# What walking a decoded JSON document can raise when its shape is wrong: a 400, not a 500.
# OverflowError: int(Infinity), which json.loads accepts as a number.
JSON_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, OverflowError, RecursionError)


@dataclass
class ResourceBatch:
    """The points of one resource (one recording) with the resource's attributes."""

    attributes: dict[str, Any]
    points: Iterator[Columns] = field(default_factory=lambda: iter(()))
    """Lazy, walked once; `rejected` counts the points it skipped once it has been walked."""
    rejected: int = 0


@dataclass
class Batch:
    """A parsed request: one entry per resource, plus why points were rejected (if any)."""

    resources: list[ResourceBatch]
    reasons: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    """Record keys already checked against the rules (a batch repeats few keys many times)."""

    @property
    def rejected(self) -> int:
        """Points skipped so far (all of them once every resource's points were walked)."""
        return sum(r.rejected for r in self.resources)


def parse_metrics(body: bytes, content_type: str) -> Batch:
    """Parse an `ExportMetricsServiceRequest` body in either encoding; raise MalformedBody."""
    if content_type == "application/x-protobuf":
        return _parse_protobuf(body)
    return _parse_json(body)


def load_json_object(body: bytes, what: str) -> dict[str, Any]:
    """`json.loads` a body that must be an object; raise MalformedBody with the reason."""
    return json_document(body, what)


def checked_time(time_unix_nano: int) -> int:
    """A time within the rules (`check_time`), without the call in the common case."""
    if 0 <= time_unix_nano <= TIME_MAX:
        return time_unix_nano
    return check_time(time_unix_nano)


def _parse_json(body: bytes) -> Batch:
    doc = fast_json_object(body, "OTLP-JSON metrics")
    batch = Batch([])
    try:
        for rm in doc.get("resourceMetrics") or ():
            resource = rm.get("resource") or {}
            out = ResourceBatch(json_attributes(resource.get("attributes")))
            out.points = _json_points(rm, out, batch)
            batch.resources.append(out)
    except JSON_SHAPE_ERRORS as exc:
        raise MalformedBody(f"OTLP-JSON metrics: malformed structure ({exc!r})") from None
    return batch


def _json_points(rm: dict[str, Any], out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    try:
        for sm in rm.get("scopeMetrics") or ():
            for metric in sm.get("metrics") or ():
                yield from _json_metric(metric, out, batch)
    except ConfigError:
        raise
    except JSON_SHAPE_ERRORS as exc:
        raise MalformedBody(f"OTLP-JSON metrics: malformed structure ({exc!r})") from None


def _json_metric(metric: dict[str, Any], out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    name = metric["name"]
    data = metric.get("gauge") or metric.get("sum")
    if data is None:
        for kind in ("histogram", "exponentialHistogram", "summary"):
            if kind in metric:
                out.rejected += len(metric[kind].get("dataPoints") or ())
                _note(batch.reasons, f"{kind} metrics are not stored")
        return
    points = data.get("dataPoints") or ()
    columns = _json_columns(name, points)
    if columns is None:
        yield from _json_each(name, points, out, batch)
        return
    _check_key(batch, name)
    yield _checked_ranges(columns)


def _json_columns(name: str, points: Any) -> Columns | None:
    """The common metric (every point: only markov.step, a float asDouble, a time string),
    walked a column at a time; None when any point is otherwise (`_json_each` takes it)."""
    attrs = [dp.get("attributes") for dp in points]
    if not all(a.__class__ is list and len(a) == 1 and a[0].get("key") == STEP_ATTR for a in attrs):
        return None
    values = [dp.get("asDouble") for dp in points]
    raw_steps = [a[0]["value"].get("intValue") for a in attrs]
    raw_times = [dp.get("timeUnixNano") for dp in points]
    same = {float}, {str}
    if (set(map(type, values)), set(map(type, raw_steps))) != same or not all(raw_times):
        return None
    if set(map(type, raw_times)) != {str}:
        return None
    return Columns(name, list(map(int, raw_steps)), values, list(map(int, raw_times)))


def _json_each(name: str, points: Any, out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    """Any metric, point by point (several keys, other attributes, asInt, non-finite
    strings, rejected points): a column per key and attribute set."""
    per_series: dict[tuple[str, str | None], Columns] = {}
    for dp in points:
        key, step, others = name, None, None
        for kv in dp.get("attributes") or ():
            if kv["key"] == STEP_ATTR:
                step = json_int(kv["value"]["intValue"], STEP_ATTR)
            elif kv["key"] == KEY_ATTR:
                key = kv["value"]["stringValue"]
            else:
                others = others or {}
                others[kv["key"]] = _json_identity_value(kv.get("value") or {})
        value = _json_point_value(dp)
        if step is None or value is None:
            out.rejected += 1
            _note(batch.reasons, "points need a value and the attribute markov.step")
            continue
        _check_key(batch, key)
        attrs = None if others is None else attributes_identity(others)
        column = per_series.get((key, attrs))
        if column is None:
            column = per_series[key, attrs] = Columns(key, [], [], [], attrs)
        column.steps.append(step)
        column.values.append(value)
        column.times.append(json_int(dp.get("timeUnixNano") or 0, "timeUnixNano"))
    for column in per_series.values():
        yield _checked_ranges(column)


def attributes_identity(attributes: dict[str, Any]) -> str:
    """A point's attributes (but `markov.step` and `markov.key`) as one text, the same for
    either encoding: JSON with sorted keys, ASCII only (PostgreSQL text takes no NUL). A text
    longer than `MAX_ATTRIBUTES_TEXT` is kept as its SHA-256, so a point's row stays small."""
    text = json.dumps(attributes, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_ATTRIBUTES_TEXT:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _json_identity_value(value: dict[str, Any]) -> Any:
    """An OTLP-JSON AnyValue as `value_of` reads its protobuf twin: bytes (base64 in JSON) as
    hex, also inside arrays and key-value lists."""
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"], validate=True).hex()
        except (binascii.Error, TypeError, ValueError):
            return str(value["bytesValue"])
    if "arrayValue" in value:
        return [_json_identity_value(v) for v in value["arrayValue"].get("values") or ()]
    if "kvlistValue" in value:
        pairs = value["kvlistValue"].get("values") or ()
        return {kv["key"]: _json_identity_value(kv.get("value") or {}) for kv in pairs}
    return json_any_value(value)


def json_int(value: Any, what: str) -> int:
    """An OTLP-JSON int64 field: a decimal string or a JSON integer. A JSON number with a
    fraction or exponent is refused: orjson reads integers past 64 bits as doubles, which
    would round (-2**63-1 would pass as -2**63)."""
    if value.__class__ is float:
        raise ValueError(f"{what} {value!r} must be an integer or a decimal string")
    return int(value)


def _json_point_value(dp: dict[str, Any]) -> int | float | None:
    value = dp.get("asDouble")
    if value is None:
        as_int = dp.get("asInt")
        if as_int is None:
            return None
        number = json_int(as_int, "asInt")
        if not INT64_MIN <= number <= INT64_MAX:
            raise ValueError(f"asInt {number} is outside int64 (OTLP's sfixed64)")
        return number
    if isinstance(value, str):
        if value not in NON_FINITE:
            raise ValueError(f"asDouble {value!r} is not a number")
        return NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"asDouble {value!r} is not a number")
    return float(value)


def json_attributes(attrs: Any) -> dict[str, Any]:
    """OTLP-JSON `attributes` (a list of KeyValue) as a plain dict."""
    return {kv["key"]: json_any_value(kv.get("value") or {}) for kv in attrs or ()}


def json_any_value(value: dict[str, Any]) -> Any:
    """An OTLP-JSON AnyValue as a Python value."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return json_int(value["intValue"], "intValue")
    if "doubleValue" in value:
        double = value["doubleValue"]
        return NON_FINITE[double] if isinstance(double, str) else float(double)
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [json_any_value(v) for v in value["arrayValue"].get("values") or ()]
    if "kvlistValue" in value:
        return json_attributes(value["kvlistValue"].get("values"))
    if "bytesValue" in value:
        return str(value["bytesValue"])
    return None


def _parse_protobuf(body: bytes) -> Batch:
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise MalformedBody(f"OTLP protobuf metrics: cannot decode ({exc})") from exc
    batch = Batch([])
    for rm in request.resource_metrics:
        out = ResourceBatch(proto_attributes(rm.resource.attributes))
        out.points = _proto_points(rm, out, batch)
        batch.resources.append(out)
    return batch


_ATTRIBUTES = attrgetter("attributes")
_FIRST = itemgetter(0)
_KEY = attrgetter("key")
_STEP = attrgetter("value.int_value")  # a step is an int64 field already
_AS_INT = attrgetter("as_int")
_AS_DOUBLE = attrgetter("as_double")
_TIME = attrgetter("time_unix_nano")


def _proto_points(rm: Any, out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    for sm in rm.scope_metrics:
        for metric in sm.metrics:
            yield from _proto_metric(metric, out, batch)


def _proto_metric(metric: Any, out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    kind = metric.WhichOneof("data")
    if kind not in ("gauge", "sum"):
        if kind is not None:
            out.rejected += len(getattr(metric, kind).data_points)
            _note(batch.reasons, f"{kind} metrics are not stored")
        return
    data = getattr(metric, kind)
    points = data.data_points
    wire = wire_points(data, len(points))  # the common metric, off its bytes (otlp_wire.py)
    columns = Columns(metric.name, *wire) if wire else _proto_columns(metric.name, points)
    if columns is None:
        yield from _proto_each(metric.name, points, out, batch)
        return
    _check_key(batch, metric.name)
    yield _checked_times(columns)


def _proto_columns(name: str, points: Any) -> Columns | None:
    """The common metric (every point: only markov.step, an as_double) a column at a time;
    None when any point is otherwise (`_proto_each` takes it). Each point's wrapper is made once
    (`list`): every access through the repeated field would make it anew, ~80 ns a time."""
    dps = list(points)
    if not dps:  # no points, no key (as over OTLP-JSON): `_proto_each` yields nothing
        return None
    attrs = list(map(_ATTRIBUTES, dps))
    if set(map(len, attrs)) != {1}:
        return None
    kvs = list(map(_FIRST, attrs))
    if set(map(_KEY, kvs)) != {STEP_ATTR}:
        return None
    if any(map(_AS_INT, dps)):
        return None
    values = list(map(_AS_DOUBLE, dps))
    # 0.0 is also what as_double reads for a point of as_int 0 or of no value: only those few
    # ask WhichOneof (~120 ns a point).
    if 0.0 in values and any(
        dp.WhichOneof("value") != "as_double" for dp in dps if not dp.as_double
    ):
        return None
    return Columns(name, list(map(_STEP, kvs)), values, list(map(_TIME, dps)))


def _proto_each(name: str, points: Any, out: ResourceBatch, batch: Batch) -> Iterator[Columns]:
    """Any metric, point by point (several keys, other attributes, asInt, rejected points):
    a column per key and attribute set."""
    per_series: dict[tuple[str, str | None], Columns] = {}
    for dp in points:
        key, step, others = name, None, None
        for kv in dp.attributes:
            if kv.key == STEP_ATTR:
                step = kv.value.int_value
            elif kv.key == KEY_ATTR:
                key = kv.value.string_value
            else:
                others = others or {}
                others[kv.key] = value_of(kv.value)
        which = dp.WhichOneof("value")
        if step is None or which is None:
            out.rejected += 1
            _note(batch.reasons, "points need a value and the attribute markov.step")
            continue
        _check_key(batch, key)
        attrs = None if others is None else attributes_identity(others)
        column = per_series.get((key, attrs))
        if column is None:
            column = per_series[key, attrs] = Columns(key, [], [], [], attrs)
        column.steps.append(step)
        column.values.append(dp.as_double if which == "as_double" else dp.as_int)
        column.times.append(dp.time_unix_nano)
    for column in per_series.values():
        yield _checked_times(column)


def _check_key(batch: Batch, key: str) -> None:
    if key not in batch.keys:
        batch.keys.add(check_key(key))


def check_columns(batch: Batch, columns: Columns) -> Columns:
    """`columns` once its key, steps and times are within the rules (ConfigError otherwise)."""
    _check_key(batch, columns.key)
    return _checked_ranges(columns)


def _checked_ranges(columns: Columns) -> Columns:
    """`columns` once every step is an int64 and every time within the rules (`check_step`,
    `check_time` raise for the first that is not), checked with a min and a max per column."""
    steps, times = columns.steps, columns.times
    if steps and (min(steps) < INT64_MIN or max(steps) > INT64_MAX):
        for step in steps:
            check_step(step)
    if times and (min(times) < 0 or max(times) > TIME_MAX):
        for time_unix_nano in times:
            check_time(time_unix_nano)
    return columns


def _checked_times(columns: Columns) -> Columns:
    """`columns` of a protobuf metric once every time is within the rules: its types bound the
    rest (a step is an int64 field, a time a fixed64, never below zero), so one max a column
    instead of `_checked_ranges`' four passes (~6% of a protobuf body's ingest)."""
    times = columns.times
    if times and max(times) > TIME_MAX:
        for time_unix_nano in times:
            check_time(time_unix_nano)
    return columns


def proto_attributes(attrs: Any) -> dict[str, Any]:
    """Protobuf KeyValue list as a plain dict."""
    return {kv.key: value_of(kv.value) for kv in attrs}


def value_of(value: AnyValue) -> Any:
    """A protobuf AnyValue as a Python value."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return proto_attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None if which is None else getattr(value, which)


def _note(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)
