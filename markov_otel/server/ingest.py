"""OTLP/HTTP ingest: `POST /v1/metrics`, `/v1/traces`, `/v1/logs`, answered in the same encoding.

Points attach to the recording named by the resource attribute `markov.recording.id` (registered
from the resource when unknown). A batch with an `Idempotency-Key` is stored with its key in one
transaction; a repeated key answers 200 and stores nothing. Points that cannot be stored (no
recording id, no `markov.step`, histograms) are reported in `partialSuccess`, as OTLP says.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from markov_otel.server.auth import Grant
from markov_otel.server.bodies import JSON, PROTOBUF, ApiError, otlp_content_type, read_body
from markov_otel.server.otlp import MalformedBody, parse_metrics
from markov_otel.server.records import non_finite_text, valid_id
from markov_otel.server.signals import parse_events
from markov_otel.server.storage import EventRow, PointRow, Store, StoreRefused

__all__ = ["ingest_endpoint"]

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
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3}


def ingest_endpoint(signal: str, store: Store, limit: int) -> Any:
    """The Starlette endpoint for one OTLP signal."""

    async def endpoint(request: Request) -> Response:
        ctype = JSON
        try:
            ctype = otlp_content_type(request)
            body = await read_body(request, limit)
            key = idempotency_key(request)
            grant: Grant = request.state.grant
            work = ingest_metrics if signal == "metrics" else ingest_events
            rejected, reasons = await run_in_threadpool(
                work, store, grant, signal, body, ctype, key
            )
        except ApiError as exc:
            return error_response(exc, ctype)
        return export_response(signal, ctype, rejected, reasons)

    return endpoint


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, if any; 400 when it is blank or unreasonably long."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > 512:
        raise ApiError(
            400, "Idempotency-Key must be 1-512 characters, e.g. <recording_id>:metrics:7"
        )
    return key


def ingest_metrics(
    store: Store, grant: Grant, signal: str, body: bytes, ctype: str, key: str | None
) -> tuple[int, list[str]]:
    """Parse and store a metrics batch; return (rejected points, reasons)."""
    try:
        batch = parse_metrics(body, ctype)
    except MalformedBody as exc:
        raise ApiError(400, str(exc)) from exc
    rejected, reasons = batch.rejected, batch.reasons
    resources: list[tuple[str, dict[str, Any]]] = []
    rows: list[PointRow] = []
    isfinite = math.isfinite
    for rb in batch.resources:
        rid = rb.attributes.get(RECORDING_ATTR)
        if not valid_id(rid):
            rejected += len(rb.points)
            _note(reasons, NO_RECORDING)
            continue
        resources.append((rid, rb.attributes))
        for k, step, value, ns in rb.points:
            if value.__class__ is float and not isfinite(value):
                rows.append((rid, k, step, None, non_finite_text(value), ns))
            else:
                rows.append((rid, k, step, value, None, ns))
    check_projects(store, grant, resources)
    store_batch(store, key, resources, points=rows)
    return rejected, reasons


def ingest_events(
    store: Store, grant: Grant, signal: str, body: bytes, ctype: str, key: str | None
) -> tuple[int, list[str]]:
    """Parse and store a traces or logs batch; return (rejected spans/records, reasons)."""
    try:
        batch = parse_events(signal, body, ctype)
    except MalformedBody as exc:
        raise ApiError(400, str(exc)) from exc
    rejected, reasons = 0, list[str]()
    resources: list[tuple[str, dict[str, Any]]] = []
    rows: list[EventRow] = []
    for attrs, events in batch:
        rid = attrs.get(RECORDING_ATTR)
        if not valid_id(rid):
            rejected += len(events)
            _note(reasons, NO_RECORDING)
            continue
        resources.append((rid, attrs))
        rows.extend((rid, signal, name, ns, event_attrs) for name, ns, event_attrs in events)
    check_projects(store, grant, resources)
    store_batch(store, key, resources, events=rows)
    return rejected, reasons


def store_batch(store: Store, key: str | None, *args: Any, **kwargs: Any) -> None:
    """`store.ingest`, with a value the database cannot hold turned into a 400."""
    try:
        store.ingest(key, *args, **kwargs)
    except StoreRefused as exc:
        raise ApiError(400, str(exc)) from exc


def check_projects(store: Store, grant: Grant, resources: list[tuple[str, dict[str, Any]]]) -> None:
    """403 when a scoped token writes to a recording of another project."""
    if grant.project_id is None:
        return
    known = store.projects_of([rid for rid, _ in resources])
    for rid, attrs in resources:
        project = known.get(rid, attrs.get("markov.project.id"))
        if not grant.allows(None if project is None else str(project)):
            raise ApiError(403, f"this token may not write recording {rid!r} of another project")


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
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if ctype == PROTOBUF:
        body = Status(code=code, message=exc.reason).SerializeToString()
        return Response(body, exc.status, headers=headers, media_type=PROTOBUF)
    doc = {"code": code, "message": exc.reason, "error": exc.reason}
    return Response(json.dumps(doc), exc.status, headers=headers, media_type=JSON)


def _note(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)
