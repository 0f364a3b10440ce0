"""The REST routes of protocol.md: register, patch and read recordings, records, alerts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError, json_object
from markov_otel.server.otlp import NON_FINITE
from markov_otel.server.records import IDENTITY_FIELDS, JSON_FIELDS, jsonable, valid_id
from markov_otel.server.storage import Store

__all__ = ["api_routes", "json_response"]

Handler = Callable[[Request], Awaitable[Response]]


def json_response(doc: Any, status: int = 200) -> Response:
    """A JSON answer; non-finite floats become the protocol's strings."""
    body = json.dumps(jsonable(doc), allow_nan=False, separators=(",", ":"))
    return Response(body, status, media_type="application/json")


class Api:
    """The handlers, bound to one store and the settings of one app."""

    def __init__(self, store: Store, limit: int, public_url: str | None) -> None:
        self.store, self.limit, self.public_url = store, limit, public_url

    def url_of(self, request: Request, recording_id: str) -> str:
        """The experiment page of a recording, on `public_url` or the request's own base."""
        base = self.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/recordings/{recording_id}"

    def present(self, request: Request, recording: dict[str, Any]) -> dict[str, Any]:
        out = dict(recording)
        out.setdefault("keys", [])
        out["experiment_url"] = self.url_of(request, recording["recording_id"])
        return out

    async def readable(self, request: Request) -> dict[str, Any]:
        """The recording named in the path, if this request may see it (400/403/404 if not)."""
        recording_id = request.path_params["recording_id"]
        if not valid_id(recording_id):
            raise ApiError(400, f"recording id {recording_id!r} is not valid (protocol.md)")
        recording = await run_in_threadpool(self.store.get, recording_id)
        if recording is None:
            raise ApiError(404, f"no recording {recording_id!r}")
        check_grant(request, recording.get("project_id"))
        return recording

    async def register(self, request: Request) -> Response:
        body = await json_object(request, self.limit)
        fields = registration_fields(body)
        check_grant(request, fields.get("project_id"))
        existing = await run_in_threadpool(self.store.get, fields["recording_id"])
        if existing is not None:
            check_grant(request, existing.get("project_id"))
        recording, created = await run_in_threadpool(self.store.register, fields)
        return json_response(self.present(request, recording), 201 if created else 200)

    async def patch(self, request: Request) -> Response:
        current = await self.readable(request)
        changes = patch_fields(await json_object(request, self.limit))
        recording = await run_in_threadpool(self.store.patch, current["recording_id"], changes)
        if recording is None:
            raise ApiError(404, f"no recording {current['recording_id']!r}")
        return json_response(self.present(request, recording))

    async def list(self, request: Request) -> Response:
        project_id = request.query_params.get("project_id")
        if project_id is not None and "\x00" in project_id:
            raise ApiError(400, "project_id must not contain NUL characters")
        grant: Grant = request.state.grant
        if project_id is not None:
            check_grant(request, project_id)
        elif grant.project_id is not None:
            project_id = grant.project_id
        recordings = await run_in_threadpool(self.store.list_recordings, project_id)
        return json_response([self.present(request, r) for r in recordings])

    async def get(self, request: Request) -> Response:
        return json_response(self.present(request, await self.readable(request)))

    async def records(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if not key or "\x00" in key:
            raise ApiError(
                400, "query parameter key is required (no NUL characters), e.g. ?key=loss"
            )
        recording = await self.readable(request)
        rows = await run_in_threadpool(self.store.records, recording["recording_id"], key)
        # Values are already finite numbers or the protocol's strings: skip jsonable's walk.
        doc = [{"step": s, "value": v, "time_unix_nano": t} for s, v, t in rows]
        return Response(json.dumps(doc, allow_nan=False), media_type="application/json")

    async def alerts(self, request: Request) -> Response:
        recording = await self.readable(request)
        return json_response(await run_in_threadpool(self.store.alerts, recording["recording_id"]))

    async def requirements(self, request: Request) -> Response:
        recording = await self.readable(request)
        found = await run_in_threadpool(self.store.requirements, recording["recording_id"])
        if found is None:
            raise ApiError(404, f"recording {recording['recording_id']!r} has no requirements")
        return json_response(found)


def api_routes(store: Store, limit: int, public_url: str | None) -> list[Route]:
    """The REST routes under /api/v1."""
    api = Api(store, limit, public_url)
    one = "/api/v1/recordings/{recording_id}"
    return [
        route_by_method("/api/v1/recordings", GET=api.list, POST=api.register),
        route_by_method(one, GET=api.get, PATCH=api.patch),
        Route(one + "/records", api.records, methods=["GET"]),
        Route(one + "/alerts", api.alerts, methods=["GET"]),
        Route(one + "/requirements", api.requirements, methods=["GET"]),
    ]


def route_by_method(path: str, **handlers: Handler) -> Route:
    """One route for several methods, so a 405 lists every allowed method in Allow."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(handlers))


def check_grant(request: Request, project_id: str | None) -> None:
    """403 when the request's token is scoped to another project."""
    grant: Grant = request.state.grant
    if not grant.allows(project_id):
        raise ApiError(403, f"this token may not access project {project_id or ''!r}")


def registration_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The validated fields of a POST /api/v1/recordings body (400 with the reason if invalid)."""
    recording_id = body.get("recording_id")
    if not valid_id(recording_id):
        raise ApiError(
            400, f"recording_id={recording_id!r} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$"
        )
    fields: dict[str, Any] = {"recording_id": recording_id}
    for name in IDENTITY_FIELDS:
        fields[name] = _string(body, name)
    for name in ("metadata", "hyper_parameters"):
        fields[name] = _mapping(body, name)
    fields["model_id"] = fields["model_id"] or "model-" + uuid.uuid4().hex[:16]
    return fields


def patch_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The validated changes of a PATCH body (400 with the reason if invalid)."""
    changes: dict[str, Any] = {}
    for name in JSON_FIELDS:
        if body.get(name) is not None:
            changes[name] = _mapping(body, name)
    for name in ("status", "notes"):
        if body.get(name) is not None:
            changes[name] = _string(body, name)
    if body.get("requirements") is not None:
        changes["requirements"] = _mapping(body, "requirements")
    alerts = body.get("alerts")
    if alerts is not None:
        if not isinstance(alerts, list):
            raise ApiError(
                400, f"alerts must be a list of alert objects, got {type(alerts).__name__}"
            )
        for alert in alerts:
            _check_alert(alert)
        changes["alerts"] = alerts
    return changes


_ALERT_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "metric_name": ("a string", lambda v: isinstance(v, str)),
    "operation": ("a string", lambda v: isinstance(v, str)),
    "text": ("a string", lambda v: isinstance(v, str)),
    "threshold": ("a number", lambda v: _is_number(v) or _is_non_finite(v)),
    "value": ("a number", lambda v: _is_number(v) or _is_non_finite(v)),
    "step": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "time_unix_nano": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
}


def _check_alert(alert: Any) -> None:
    """400 unless `alert` is an object with a string alert_id and well-typed known fields."""
    if not isinstance(alert, dict) or not isinstance(alert.get("alert_id"), str):
        raise ApiError(400, "each alert must be an object with a string alert_id")
    if not alert["alert_id"] or "\x00" in alert["alert_id"]:
        raise ApiError(400, "alert_id must be a non-empty string without NUL characters")
    for name, (kind, ok) in _ALERT_TYPES.items():
        if name in alert and not ok(alert[name]):
            raise ApiError(400, f"alert field {name} must be {kind}, got {alert[name]!r:.40}")


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, str) and value in NON_FINITE


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ApiError(400, f"{name} must not contain NUL characters")
    return value


def _mapping(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be a JSON object, got {type(value).__name__}")
    return value
