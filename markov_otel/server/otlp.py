"""Parse OTLP/HTTP metrics bodies (OTLP-JSON and protobuf) into plain rows for the store.

OTLP-JSON is walked as dicts after `json.loads` (int64 as decimal strings, non-finite doubles as
"NaN"/"Infinity"/"-Infinity"); `json_format.Parse` is ~10x slower and rejects nothing we need
rejected. Protobuf bodies go through `ParseFromString`. Both paths produce the same `Batch`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["Batch", "MalformedBody", "Point", "ResourceBatch", "parse_metrics", "value_of"]

STEP_ATTR = "markov.step"
KEY_ATTR = "markov.key"
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# (key, step, value, time_unix_nano); value is int, float (possibly non-finite).
Point = tuple[str, int, "int | float", int]


class MalformedBody(ValueError):
    """The body is not a valid OTLP request; the message is the reason sent back with the 400."""


@dataclass
class ResourceBatch:
    """The points of one resource (one recording) with the resource's attributes."""

    attributes: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    rejected: int = 0


@dataclass
class Batch:
    """A parsed request: one entry per resource, plus why points were rejected (if any)."""

    resources: list[ResourceBatch]
    reasons: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.resources)


def parse_metrics(body: bytes, content_type: str) -> Batch:
    """Parse an `ExportMetricsServiceRequest` body in either encoding; raise MalformedBody."""
    if content_type == "application/x-protobuf":
        return _parse_protobuf(body)
    return _parse_json(body)


def load_json_object(body: bytes, what: str) -> dict[str, Any]:
    """`json.loads` a body that must be an object; raise MalformedBody with the reason."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what}: body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MalformedBody(f"{what}: body must be a JSON object, got {type(doc).__name__}")
    return doc


def _parse_json(body: bytes) -> Batch:
    doc = load_json_object(body, "OTLP-JSON metrics")
    batch = Batch([])
    try:
        for rm in doc.get("resourceMetrics") or ():
            resource = rm.get("resource") or {}
            out = ResourceBatch(json_attributes(resource.get("attributes")))
            for sm in rm.get("scopeMetrics") or ():
                for metric in sm.get("metrics") or ():
                    _json_metric(metric, out, batch.reasons)
            batch.resources.append(out)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise MalformedBody(f"OTLP-JSON metrics: malformed structure ({exc!r})") from exc
    return batch


def _json_metric(metric: dict[str, Any], out: ResourceBatch, reasons: list[str]) -> None:
    name = metric["name"]
    data = metric.get("gauge") or metric.get("sum")
    if data is None:
        for kind in ("histogram", "exponentialHistogram", "summary"):
            if kind in metric:
                out.rejected += len(metric[kind].get("dataPoints") or ())
                _note(reasons, f"{kind} metrics are not stored")
        return
    append = out.points.append
    for dp in data.get("dataPoints") or ():
        key, step = name, None
        for kv in dp.get("attributes") or ():
            if kv["key"] == STEP_ATTR:
                step = int(kv["value"]["intValue"])
            elif kv["key"] == KEY_ATTR:
                key = kv["value"]["stringValue"]
        value = dp.get("asDouble")
        if value.__class__ is not float:  # the common case skips the call: ~2 µs a point
            value = _json_point_value(dp)
        if step is None or value is None:
            out.rejected += 1
            _note(reasons, "points need a value and the attribute markov.step")
            continue
        append((key, step, value, int(dp.get("timeUnixNano") or 0)))


def _json_point_value(dp: dict[str, Any]) -> int | float | None:
    value = dp.get("asDouble")
    if value is None:
        as_int = dp.get("asInt")
        return None if as_int is None else int(as_int)
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
        return int(value["intValue"])
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
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _proto_metric(metric, out, batch.reasons)
        batch.resources.append(out)
    return batch


def _proto_metric(metric: Any, out: ResourceBatch, reasons: list[str]) -> None:
    kind = metric.WhichOneof("data")
    if kind not in ("gauge", "sum"):
        if kind is not None:
            out.rejected += len(getattr(metric, kind).data_points)
            _note(reasons, f"{kind} metrics are not stored")
        return
    for dp in getattr(metric, kind).data_points:
        key, step = metric.name, None
        for kv in dp.attributes:
            if kv.key == STEP_ATTR:
                step = kv.value.int_value
            elif kv.key == KEY_ATTR:
                key = kv.value.string_value
        which = dp.WhichOneof("value")
        if step is None or which is None:
            out.rejected += 1
            _note(reasons, "points need a value and the attribute markov.step")
            continue
        value = dp.as_double if which == "as_double" else dp.as_int
        out.points.append((key, step, value, dp.time_unix_nano))


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
