"""OTLP/HTTP ingest: `POST /v1/metrics`, `/v1/traces`, `/v1/logs`, answered in the same encoding.

Points attach to the recording named by the resource attribute `markov.recording.id` (registered
from the resource when unknown). Everything that reaches storage follows `markov_otel.rules`; a
value they refuse is a 400 with their message. A batch with an `Idempotency-Key` is stored with
its key, scoped to the batch's recordings, and the SHA-256 of its decoded body, in one
transaction: the same key and body again answers 200 and stores nothing, the same key with
another body 422. Points that cannot be stored (no recording id, no `markov.step`, histograms)
are reported in `partialSuccess`, as OTLP says; ExponentialHistogram points of an OTLP-JSON
body (recorded arrays) are kept as events (`distributions.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from markov_otel.errors import ConfigError
from markov_otel.rules import MAX_IDEMPOTENCY_KEY
from markov_otel.server.auth import Grant
from markov_otel.server.bodies import (
    JSON,
    PROTOBUF,
    ApiError,
    MalformedBody,
    collector_paused,
    otlp_content_type,
)
from markov_otel.server.distributions import (
    PROTO_HISTOGRAMS,
    distribution_rows,
    proto_distribution_rows,
)
from markov_otel.server.fields import resource_fields
from markov_otel.server.gate import IngestGate
from markov_otel.server.otlp import Batch, parse_metrics
from markov_otel.server.otlp_json import parse_common
from markov_otel.server.records import valid_id
from markov_otel.server.signals import parse_events
from markov_otel.server.storage import (
    BatchKey,
    EventRow,
    Forbidden,
    KeyReused,
    SeriesPoints,
    Store,
    StoreRefused,
)

__all__ = ["error_response", "ingest_endpoint"]

RECORDING_ATTR = "markov.recording.id"
NO_RECORDING = f"resources need a valid {RECORDING_ATTR} attribute"
# signal -> (response message, partial-success message, its rejected-count field in JSON, in proto)
_RESPONSES: dict[str, tuple[Any, Any, str, str]] = {
    "metrics": (
        metrics_pb.ExportMetricsServiceResponse,
        metrics_pb.ExportMetricsPartialSuccess,
        "rejectedDataPoints",
        "rejected_data_points",
    ),
    "traces": (
        trace_pb.ExportTraceServiceResponse,
        trace_pb.ExportTracePartialSuccess,
        "rejectedSpans",
        "rejected_spans",
    ),
    "logs": (
        logs_pb.ExportLogsServiceResponse,
        logs_pb.ExportLogsPartialSuccess,
        "rejectedLogRecords",
        "rejected_log_records",
    ),
}
# HTTP status -> google.rpc.Code for the error body
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 413: 8, 415: 3, 422: 9, 429: 8, 503: 14}

Resources = list[tuple[str, dict[str, Any]]]


def ingest_endpoint(signal: str, store: Store, limit: int, gate: IngestGate) -> Any:
    """The Starlette endpoint for one OTLP signal."""
    work = ingest_metrics if signal == "metrics" else ingest_events

    async def endpoint(request: Request) -> Response:
        ctype = JSON
        try:
            ctype = otlp_content_type(request)
            key = idempotency_key(request)
            grant: Grant = request.state.grant
            async with gate.admitted(request, limit, grant.project_id or "") as body:
                rejected, reasons = await run_in_threadpool(
                    work, store, grant, signal, body, ctype, key
                )
        except ApiError as exc:
            return error_response(exc, ctype)
        return export_response(signal, ctype, rejected, reasons)

    return endpoint


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, if any; 400 when it is blank or longer than the rule."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters, "
            "e.g. <recording_id>:<writer_id>:metrics:7",
        )
    return key


@contextmanager
def refusals() -> Iterator[None]:
    """Turn what parsing, the rules and the store refuse into the HTTP answer for it."""
    try:
        yield
    except (MalformedBody, ConfigError, StoreRefused) as exc:
        raise ApiError(400, str(exc)) from None
    except Forbidden as exc:
        raise ApiError(403, str(exc)) from None
    except KeyReused as exc:
        raise ApiError(422, str(exc)) from None


def ingest_metrics(
    store: Store, grant: Grant, signal: str, body: bytes, ctype: str, key: str | None
) -> tuple[int, list[str]]:
    """Parse and store a metrics batch; return (rejected points, reasons)."""
    with refusals(), collector_paused():  # the parsed body and its columns hold no cycles
        common = parse_common(body) if ctype == JSON else None  # the fast path, or None
        batch = parse_metrics(body, ctype) if common is None else common
        resources: Resources = []
        owners: list[str | None] = []
        for rb in batch.resources:
            rid = rb.attributes.get(RECORDING_ATTR)
            owners.append(rid if valid_id(rid) else None)
            if valid_id(rid):
                resources.append((rid, resource_fields(rb.attributes)))
            else:
                _note(batch.reasons, NO_RECORDING)
        # Walked into columns here, before the store's lock: one body parses while another is
        # stored (the database releases the GIL), and the ingest gate bounds the memory.
        series = list(point_series(batch, owners))
        arrays = (  # recorded arrays: events
            distribution_rows(body)
            if ctype == JSON
            else proto_distribution_rows(body, batch.reasons)
        )
    with refusals():
        store.ingest(
            batch_key(key, body), resources, points=series, events=arrays, scope=grant.project_id
        )
    if not arrays:
        return batch.rejected, batch.reasons
    reasons = [
        r for r in batch.reasons if not r.startswith(("exponentialHistogram", PROTO_HISTOGRAMS))
    ]
    return max(0, batch.rejected - len(arrays)), reasons


def point_series(batch: Batch, owners: list[str | None]) -> Iterator[SeriesPoints]:
    """The store's series of a batch, made as the store takes them (see otlp.py); the points
    of a resource without a valid recording id are counted as rejected."""
    for rb, rid in zip(batch.resources, owners, strict=True):
        if rid is None:
            rb.rejected += sum(len(columns.steps) for columns in rb.points)
            continue
        for c in rb.points:
            yield SeriesPoints.of(rid, c.key, c.steps, c.values, c.times, c.attrs)


def ingest_events(
    store: Store, grant: Grant, signal: str, body: bytes, ctype: str, key: str | None
) -> tuple[int, list[str]]:
    """Parse and store a traces or logs batch; return (rejected spans/records, reasons)."""
    with refusals():
        batch = parse_events(signal, body, ctype)
        rejected, reasons = 0, list[str]()
        resources: Resources = []
        rows: list[EventRow] = []
        for attrs, events in batch:
            rid = attrs.get(RECORDING_ATTR)
            if not valid_id(rid):
                rejected += len(events)
                _note(reasons, NO_RECORDING)
                continue
            resources.append((rid, resource_fields(attrs)))
            rows.extend((rid, signal, name, ns, event_attrs) for name, ns, event_attrs in events)
        store.ingest(batch_key(key, body), resources, events=rows, scope=grant.project_id)
    return rejected, reasons


def batch_key(key: str | None, body: bytes) -> BatchKey | None:
    """The key with the SHA-256 of the decoded (inflated) body it names."""
    return None if key is None else BatchKey(key, hashlib.sha256(body).hexdigest())


def export_response(signal: str, ctype: str, rejected: int, reasons: list[str]) -> Response:
    """An empty Export*ServiceResponse, with partialSuccess when something was rejected."""
    response_cls, partial_cls, json_field, proto_field = _RESPONSES[signal]
    message = "; ".join(reasons)
    if ctype == PROTOBUF:
        response = response_cls()
        if rejected or message:
            partial = partial_cls(error_message=message, **{proto_field: rejected})
            response.partial_success.CopyFrom(partial)
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    doc: dict[str, Any] = {}
    if rejected or message:
        doc["partialSuccess"] = {json_field: str(rejected), "errorMessage": message}
    return Response(json.dumps(doc), media_type=JSON)


def error_response(exc: ApiError, ctype: str) -> Response:
    """A refusal as a google.rpc.Status, in the request's encoding (OTLP/HTTP's error body)."""
    code = _RPC_CODES.get(exc.status, 2)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if ctype == PROTOBUF:
        body = Status(code=code, message=exc.reason).SerializeToString()
        return Response(body, exc.status, headers=headers, media_type=PROTOBUF)
    doc = {"code": code, "message": exc.reason, "error": exc.reason}
    return Response(json.dumps(doc), exc.status, headers=headers, media_type=JSON)


def _note(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)
