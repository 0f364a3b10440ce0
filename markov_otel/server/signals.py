"""Parse OTLP/HTTP traces and logs bodies into event rows (name, time, attributes) per resource.

The reference backend keeps spans and log records simply: one row each, enough to show a run's
lifecycle and alert events and to count what arrived. Metrics live in `otlp.py`. Names, times
and attributes follow `markov_otel.rules` (the attributes are stored as one JSON text, so they
obey the parameter rules: depth and size).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from markov_otel.errors import ConfigError
from markov_otel.rules import MAX_NAME_BYTES, check_params, check_text
from markov_otel.server.otlp import (
    JSON_SHAPE_ERRORS,
    MalformedBody,
    checked_time,
    json_any_value,
    json_attributes,
    load_json_object,
    proto_attributes,
    value_of,
)

__all__ = ["Event", "EventBatch", "parse_events"]

# (name, time_unix_nano, attributes)
Event = tuple[str, int, dict[str, Any]]
# one entry per resource: (resource attributes, events)
EventBatch = list[tuple[dict[str, Any], list[Event]]]


def parse_events(signal: str, body: bytes, content_type: str) -> EventBatch:
    """Parse a traces or logs export request; raise MalformedBody with the reason."""
    if content_type == "application/x-protobuf":
        return _parse_protobuf(signal, body)
    doc = load_json_object(body, f"OTLP-JSON {signal}")
    try:
        if signal == "traces":
            batch = [_json_spans(rs) for rs in doc.get("resourceSpans") or ()]
        else:
            batch = [_json_logs(rl) for rl in doc.get("resourceLogs") or ()]
    except ConfigError:
        raise
    except JSON_SHAPE_ERRORS as exc:
        raise MalformedBody(f"OTLP-JSON {signal}: malformed structure ({exc!r})") from None
    return _checked(signal, batch)


def _checked(signal: str, batch: EventBatch) -> EventBatch:
    """The batch with each event's name, time and attributes checked against the rules."""
    what = "span" if signal == "traces" else "log record"
    return [
        (
            attrs,
            [
                (
                    check_text(f"{what} name", name, MAX_NAME_BYTES),
                    checked_time(ns),
                    check_params(f"{what} attributes", event_attrs),
                )
                for name, ns, event_attrs in events
            ],
        )
        for attrs, events in batch
    ]


def _json_spans(rs: dict[str, Any]) -> tuple[dict[str, Any], list[Event]]:
    events: list[Event] = []
    for ss in rs.get("scopeSpans") or ():
        for span in ss.get("spans") or ():
            attrs = json_attributes(span.get("attributes"))
            attrs["trace_id"] = str(span.get("traceId", ""))
            attrs["span_id"] = str(span.get("spanId", ""))
            attrs["end_time_unix_nano"] = int(span.get("endTimeUnixNano") or 0)
            attrs["events"] = [
                {"name": str(e.get("name", "")), "time_unix_nano": int(e.get("timeUnixNano") or 0)}
                for e in span.get("events") or ()
            ]
            events.append((str(span["name"]), int(span.get("startTimeUnixNano") or 0), attrs))
    return _resource(rs), events


def _json_logs(rl: dict[str, Any]) -> tuple[dict[str, Any], list[Event]]:
    events: list[Event] = []
    for sl in rl.get("scopeLogs") or ():
        for record in sl.get("logRecords") or ():
            attrs = json_attributes(record.get("attributes"))
            body = record.get("body")
            if body:
                attrs["body"] = json_any_value(body)
            time = int(record.get("timeUnixNano") or record.get("observedTimeUnixNano") or 0)
            events.append((str(record.get("eventName") or ""), time, attrs))
    return _resource(rl), events


def _resource(entry: dict[str, Any]) -> dict[str, Any]:
    return json_attributes((entry.get("resource") or {}).get("attributes"))


def _parse_protobuf(signal: str, body: bytes) -> EventBatch:
    request: Any = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise MalformedBody(f"OTLP protobuf {signal}: cannot decode ({exc})") from exc
    if signal == "traces":
        return _checked(signal, [_proto_spans(rs) for rs in request.resource_spans])
    return _checked(signal, [_proto_logs(rl) for rl in request.resource_logs])


def _proto_spans(rs: Any) -> tuple[dict[str, Any], list[Event]]:
    events: list[Event] = []
    for ss in rs.scope_spans:
        for span in ss.spans:
            attrs = proto_attributes(span.attributes)
            attrs["trace_id"] = span.trace_id.hex()
            attrs["span_id"] = span.span_id.hex()
            attrs["end_time_unix_nano"] = span.end_time_unix_nano
            attrs["events"] = [
                {"name": e.name, "time_unix_nano": e.time_unix_nano} for e in span.events
            ]
            events.append((span.name, span.start_time_unix_nano, attrs))
    return proto_attributes(rs.resource.attributes), events


def _proto_logs(rl: Any) -> tuple[dict[str, Any], list[Event]]:
    events: list[Event] = []
    for sl in rl.scope_logs:
        for record in sl.log_records:
            attrs = proto_attributes(record.attributes)
            if record.HasField("body"):
                attrs["body"] = value_of(record.body)
            time = record.time_unix_nano or record.observed_time_unix_nano
            events.append((record.event_name, time, attrs))
    return proto_attributes(rl.resource.attributes), events
