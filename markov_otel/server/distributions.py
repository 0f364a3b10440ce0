"""Recorded arrays and texts at the backend: kept as event rows, read back per key and step.

A metrics body's ExponentialHistogram points (a recorded array: docs/protocol.md) become rows of
the `events` table named `markov.distribution`, stored in the batch's own transaction (so an
Idempotency-Key replay stores them no more than its points); a text is a log record the logs
endpoint already keeps as a `markov.text` event. Each is stored once by its identity
(`identity.event_identity`), so a keyless replay adds nothing. Both are read back by recording
and key, in step order (`GET /api/v1/recordings/{id}/distributions`, `.../texts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from markov_otel.errors import ConfigError
from markov_otel.otel.encoding import proto_to_otlp_json
from markov_otel.rules import check_key, check_step, check_time
from markov_otel.server.bodies import MalformedBody, fast_json_object
from markov_otel.server.otlp import json_attributes
from markov_otel.server.records import valid_id

DISTRIBUTION = "markov.distribution"
TEXT = "markov.text"
MARKER = b'"exponentialHistogram"'
"""Bodies without it hold no distribution: they are not parsed a second time."""
PROTO_HISTOGRAMS = "exponential_histogram"
"""How otlp.py's walk of a protobuf body names the histograms it did not store as points."""
VALUE_ATTRIBUTES = frozenset(
    ("markov.step", "markov.key", "markov.nan_count", "markov.posinf_count", "markov.neginf_count")
)
"""A histogram point's attributes that are its key, step or values: the others (none from the
recorder) are kept as its `attributes`, part of its identity."""

EventRow = tuple[str, str, str, int, dict[str, Any]]
"""recording_id, signal, name, time_unix_nano, attributes: a row of the events table."""


def distribution_rows(body: bytes) -> list[EventRow]:
    """The ExponentialHistogram points of an OTLP-JSON metrics body that carry a recording id
    and `markov.step`, as event rows; a point that breaks the rules is a ConfigError (400)."""
    if MARKER not in body:
        return []
    doc = fast_json_object(body, "OTLP-JSON metrics")
    try:
        return list(_rows(doc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise MalformedBody(f"OTLP-JSON exponentialHistogram: malformed ({exc!r})") from None


def proto_distribution_rows(body: bytes, reasons: list[str]) -> list[EventRow]:
    """The same for a protobuf body, which a collector's otlp_http exporter sends: parsed again
    through its OTLP-JSON form only when the walk of its points met histograms (`reasons`)."""
    if not any(r.startswith(PROTO_HISTOGRAMS) for r in reasons):
        return []
    request = ExportMetricsServiceRequest.FromString(body)  # the walk decoded it already
    return distribution_rows(proto_to_otlp_json(request).encode())


def _rows(doc: dict[str, Any]) -> Iterator[EventRow]:
    for rm in doc.get("resourceMetrics") or ():
        resource = json_attributes((rm.get("resource") or {}).get("attributes"))
        rid = resource.get("markov.recording.id")
        if not valid_id(rid):
            continue
        for sm in rm.get("scopeMetrics") or ():
            for metric in sm.get("metrics") or ():
                histogram = metric.get("exponentialHistogram")
                for dp in (histogram or {}).get("dataPoints") or ():
                    attrs = json_attributes(dp.get("attributes"))
                    if "markov.step" not in attrs:
                        continue
                    key = check_key(attrs.get("markov.key", metric["name"]))
                    time_ns = check_time(int(dp.get("timeUnixNano") or 0))
                    yield rid, "metrics", DISTRIBUTION, time_ns, _point(key, attrs, dp)


def _point(key: str, attrs: dict[str, Any], dp: dict[str, Any]) -> dict[str, Any]:
    point: dict[str, Any] = {
        "key": key,
        "step": check_step(attrs["markov.step"]),
        "count": _count(dp.get("count")),
        "sum": _double(dp.get("sum", 0.0)),
        "zero_count": _count(dp.get("zeroCount")),
        "scale": int(dp.get("scale") or 0),
        "positive": _side(dp.get("positive")),
        "negative": _side(dp.get("negative")),
    }
    for name in ("min", "max"):
        if name in dp:
            point[name] = _double(dp[name])
    for name in ("nan_count", "posinf_count", "neginf_count"):
        point[name] = _count(attrs.get(f"markov.{name}"))
    others = {name: value for name, value in attrs.items() if name not in VALUE_ATTRIBUTES}
    if others:
        point["attributes"] = others
    return point


def _count(value: Any) -> int:
    count = int(value or 0)
    if count < 0:
        raise ConfigError(f"a histogram count of {count} is negative")
    return count


def _double(value: Any) -> float | str:
    """A double as stored: finite as a number, else the protocol's string."""
    if value in ("NaN", "Infinity", "-Infinity"):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    return number


def _side(side: Any) -> dict[str, Any]:
    side = side or {}
    counts = [_count(c) for c in side.get("bucketCounts") or ()]
    return {"offset": int(side.get("offset") or 0), "bucket_counts": counts}


def distribution_doc(rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The API's answer: each point with its time, by step then time."""
    doc = [{**attrs, "time_unix_nano": ns} for ns, attrs in rows]
    return sorted(doc, key=lambda p: (p["step"], p["time_unix_nano"]))


def text_doc(rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The API's answer for texts: key, step, time and the text, by step then time."""
    doc = [
        {
            "key": attrs.get("markov.key"),
            "step": attrs.get("markov.step"),
            "time_unix_nano": ns,
            "text": attrs.get("body"),
        }
        for ns, attrs in rows
        if isinstance(attrs.get("markov.step"), int)
    ]
    return sorted(doc, key=lambda p: (p["step"], p["time_unix_nano"]))
