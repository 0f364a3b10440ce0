"""Build OTLP metrics requests for the tests: OTLP-JSON dicts and protobuf messages."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# (key, step, value, time_unix_nano)
Point = tuple[str, int, Any, int]


def new_id() -> str:
    """A fresh client-style recording id."""
    return uuid.uuid4().hex


def _json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": _json_double(value)}
    return {"stringValue": str(value)}


def _json_double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def metrics_json(recording_id: str, points: list[Point], **resource: Any) -> dict[str, Any]:
    """An OTLP-JSON MetricsData with one gauge per key, as the recorder writes it."""
    attrs = {"markov.recording.id": recording_id, **resource}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for key, step, value, ns in points:
        point: dict[str, Any] = {
            "timeUnixNano": str(ns),
            "attributes": [{"key": "markov.step", "value": {"intValue": str(step)}}],
        }
        if isinstance(value, int):
            point["asInt"] = str(value)
        else:
            point["asDouble"] = _json_double(value)
        by_key.setdefault(key, []).append(point)
    metrics = [{"name": k, "gauge": {"dataPoints": dps}} for k, dps in by_key.items()]
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": k, "value": _json_value(v)} for k, v in attrs.items()]
                },
                "scopeMetrics": [{"scope": {"name": "markov_otel"}, "metrics": metrics}],
            }
        ]
    }


def metrics_json_bytes(recording_id: str, points: list[Point], **resource: Any) -> bytes:
    """`metrics_json` encoded the OTLP way (never a bare NaN token)."""
    return json.dumps(metrics_json(recording_id, points, **resource), allow_nan=False).encode()


def metrics_protobuf(recording_id: str, points: list[Point], **resource: Any) -> bytes:
    """The same request as `metrics_json`, as a serialised ExportMetricsServiceRequest."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    for key, value in {"markov.recording.id": recording_id, **resource}.items():
        rm.resource.attributes.append(KeyValue(key=key, value=_proto_value(value)))
    sm = rm.scope_metrics.add()
    sm.scope.name = "markov_otel"
    metrics: dict[str, Any] = {}
    for key, step, value, ns in points:
        if key not in metrics:
            metrics[key] = sm.metrics.add(name=key)
        dp = metrics[key].gauge.data_points.add(time_unix_nano=ns)
        if isinstance(value, int):
            dp.as_int = value
        else:
            dp.as_double = value
        dp.attributes.append(KeyValue(key="markov.step", value=AnyValue(int_value=step)))
    return request.SerializeToString()


def _proto_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def series(key: str, n: int, start_ns: int = 1_700_000_000_000_000_000) -> list[Point]:
    """n points of one key: step i, value i/10, time start + i µs."""
    return [(key, i, i / 10, start_ns + i * 1000) for i in range(n)]
