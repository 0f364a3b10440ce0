"""The REST routes of protocol.md: register, patch and read recordings, records, alerts, limits.

A token scoped to one project gets, for another project's recording, exactly the answer it gets
for an id that does not exist (404, same body), so ids cannot be probed. Registering an id that
another project owns is a 403: ids are random uuids chosen by the client, so this only tells a
client that its own id collided.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel import rules
from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError, MalformedBody, json_document
from markov_otel.server.distributions import DISTRIBUTION, TEXT, distribution_doc, text_doc
from markov_otel.server.fields import patch_fields, registration_fields, text
from markov_otel.server.freshness import not_modified, recordings_tag, tagged
from markov_otel.server.gate import IngestGate
from markov_otel.server.lanes import ReadLane
from markov_otel.server.page_writes import PAGE_FIELDS
from markov_otel.server.records import jsonable
from markov_otel.server.storage import Forbidden, Store

__all__ = ["api_routes", "json_response", "limits"]

Events = list[tuple[int, dict[str, Any]]]
"""(time_unix_nano, attributes) of events of one name (Api.list shadows `list` in the class)."""

Handler = Callable[[Request], Awaitable[Response]]


def json_response(doc: Any, status: int = 200) -> Response:
    """A JSON answer; non-finite floats become the protocol's strings."""
    body = json.dumps(jsonable(doc), allow_nan=False, separators=(",", ":"))
    return Response(body, status, media_type="application/json")


def limits(
    max_body_bytes: int, max_artifact_bytes: int = rules.DEFAULT_MAX_ARTIFACT_BYTES
) -> dict[str, int]:
    # A part of an upload is a body too: never over the body limit.
    """What this server accepts (GET /api/v1/limits): the shared rules and the body limit."""
    return {
        "max_body_bytes": max_body_bytes,
        "max_artifact_bytes": max_artifact_bytes,
        "artifact_part_bytes": part_bytes(max_body_bytes),
        "max_name_bytes": rules.MAX_NAME_BYTES,
        "max_text_bytes": rules.MAX_TEXT_BYTES,
        "max_params_bytes": rules.MAX_PARAMS_BYTES,
        "max_depth": rules.MAX_DEPTH,
        "max_idempotency_key": rules.MAX_IDEMPOTENCY_KEY,
    }


def part_bytes(max_body_bytes: int) -> int:
    """The size of one part of an artifact upload on a server of this body limit."""
    return min(rules.ARTIFACT_PART_BYTES, max_body_bytes)


def not_found(recording_id: str) -> ApiError:
    """The one answer for a missing recording and for one this token may not see."""
    return ApiError(404, f"no recording {recording_id!r}")


class Api:
    """The handlers, bound to one store and the settings of one app."""

    def __init__(
        self, store: Store, limit: int, public_url: str | None, gate: IngestGate, reads: ReadLane
    ) -> None:
        self.store, self.limit, self.public_url, self.gate = store, limit, public_url, gate
        self.reads = reads
        self.max_artifact_bytes = rules.DEFAULT_MAX_ARTIFACT_BYTES

    def url_of(self, request: Request, recording_id: str) -> str:
        """The experiment page of a recording, on `public_url` or the request's own base."""
        base = self.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/recordings/{recording_id}"

    def present(
        self, request: Request, recording: dict[str, Any], marks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out = dict(recording)
        out.setdefault("keys", [])
        out["experiment_url"] = self.url_of(request, recording["recording_id"])
        out.update(marks or {"tags": [], "archived": False})
        return out

    async def presented(
        self, request: Request, recordings: list[dict[str, Any]], *, write: bool = False
    ) -> list[Any]:
        """The recordings as answered, with their tags and archived mark; `write`: the answer of
        a write, whose read goes ahead of the readers' queue (lanes.ReadLane.for_write)."""
        ids = [r["recording_id"] for r in recordings]
        run = self.reads.for_write if write else self.reads.run
        marks = await run(self.store.marks, ids)
        return [self.present(request, r, marks.get(r["recording_id"])) for r in recordings]

    async def delete(self, request: Request) -> Response:
        """DELETE a recording and all of it; a scoped token only in its own project (404
        elsewhere, as for reads: no existence leak)."""
        recording_id = rules.check_id(request.path_params["recording_id"])
        grant: Grant = request.state.grant
        async with self.gate.slot():
            done = await run_in_threadpool(self.store.delete, recording_id, grant.project_id)
        if not done:
            raise not_found(recording_id)
        return Response(status_code=204)

    async def readable(self, request: Request) -> dict[str, Any]:
        """The recording named in the path, if this request may see it (400/404 if not)."""
        recording_id = rules.check_id(request.path_params["recording_id"])
        recording = await self.reads.run(self.store.get, recording_id)
        grant: Grant = request.state.grant
        if recording is None or not grant.allows(recording["project_id"]):
            raise not_found(recording_id)
        return recording

    async def register(self, request: Request) -> Response:
        grant: Grant = request.state.grant
        async with self.gate.admitted(request, self.limit, grant.project_id or "") as body:
            fields = registration_fields(json_body(request, body))
            check_grant(request, fields["project_id"])
            try:
                recording, created = await run_in_threadpool(
                    self.store.register, fields, grant.project_id
                )
            except Forbidden as exc:
                raise ApiError(403, str(exc)) from None
            answer = await self.with_last_step(request, recording, write=True)
        return json_response(answer, 201 if created else 200)

    async def patch(self, request: Request) -> Response:
        recording_id = rules.check_id(request.path_params["recording_id"])
        grant: Grant = request.state.grant
        async with self.gate.admitted(request, self.limit, grant.project_id or "") as body:
            changes = patch_fields(json_body(request, body))
            beyond = sorted(set(changes) - PAGE_FIELDS)
            if getattr(request.state, "page_write", False) and beyond:
                raise ApiError(
                    403,
                    f"a page (the sign-in cookie) may change only name, notes and tags, not "
                    f"{', '.join(beyond)}; use an API client with a bearer token",
                )
            recording = await run_in_threadpool(
                self.store.patch, recording_id, changes, grant.project_id
            )
        if recording is None:
            raise not_found(recording_id)
        return json_response((await self.presented(request, [recording], write=True))[0])

    async def list(self, request: Request) -> Response:
        project_id = request.query_params.get("project_id")
        grant: Grant = request.state.grant
        if project_id is not None:
            check_grant(request, text("project_id", project_id))
        elif grant.project_id is not None:
            project_id = grant.project_id
        recordings = await self.reads.run(self.store.list_recordings, project_id)
        return json_response(await self.presented(request, recordings))

    async def get(self, request: Request) -> Response:
        """The recording, with an ETag: a live page polling it gets 304 until it changes. One
        trip to the read lane, answer encoded there: a page polling every 2 s costs the event
        loop its HTTP and no JSON, and is paced once, not once for each of its three reads."""
        recording_id = rules.check_id(request.path_params["recording_id"])
        grant: Grant = request.state.grant

        def answer() -> Response:
            recording = self.store.get(recording_id)
            if recording is None or not grant.allows(recording["project_id"]):
                raise not_found(recording_id)
            tag = recordings_tag([recording], self.public_url or str(request.base_url))
            unchanged = not_modified(request, tag)
            if unchanged is not None:
                return unchanged
            marks = self.store.marks([recording_id]).get(recording_id)
            out = self.present(request, recording, marks)
            out["last_step"] = self.store.last_step(recording_id)
            return tagged(json_response(out), tag)

        return await self.reads.run(answer)

    async def with_last_step(
        self, request: Request, recording: dict[str, Any], *, write: bool = False
    ) -> dict[str, Any]:
        """The recording as presented (tags, archived), with `last_step`: a recorder resuming it
        from a fresh run dir (another machine) continues its steps after that one."""
        out = (await self.presented(request, [recording], write=write))[0]
        run = self.reads.for_write if write else self.reads.run
        out["last_step"] = await run(self.store.last_step, recording["recording_id"])
        return out

    async def records(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if key is None:
            raise ApiError(400, "query parameter key is required, e.g. ?key=loss")
        rules.check_key(key, "query parameter key")
        recording = await self.readable(request)
        rows = await self.reads.run(self.store.records, recording["recording_id"], key)
        # Values are already finite numbers or the protocol's strings: skip jsonable's walk.
        doc = [{"step": s, "value": v, "time_unix_nano": t} for s, v, t in rows]
        return Response(json.dumps(doc, allow_nan=False), media_type="application/json")

    async def distributions(self, request: Request) -> Response:
        """Recorded arrays: one ExponentialHistogram point per step (`?key=` one key)."""
        rows = await self._events(request, DISTRIBUTION)
        return json_response(distribution_doc(rows))

    async def texts(self, request: Request) -> Response:
        """Recorded texts: key, step, time and text (`?key=` one key)."""
        rows = await self._events(request, TEXT)
        key = request.query_params.get("key")
        return json_response(
            text_doc([(ns, a) for ns, a in rows if a.get("markov.key") == key or key is None])
        )

    async def _events(self, request: Request, name: str) -> Events:
        key = request.query_params.get("key")
        if key is not None:
            rules.check_key(key, "query parameter key")
        recording = await self.readable(request)
        rows = await self.reads.run(self.store.events_named, recording["recording_id"], name)
        if key is None or name == TEXT:
            return rows
        return [(ns, attrs) for ns, attrs in rows if attrs.get("key") == key]

    async def alerts(self, request: Request) -> Response:
        recording = await self.readable(request)
        return json_response(await self.reads.run(self.store.alerts, recording["recording_id"]))

    async def requirements(self, request: Request) -> Response:
        recording = await self.readable(request)
        found = await self.reads.run(self.store.requirements, recording["recording_id"])
        if found is None:
            raise ApiError(404, f"recording {recording['recording_id']!r} has no requirements")
        return json_response(found)

    async def limits(self, request: Request) -> Response:
        return json_response(limits(self.limit, self.max_artifact_bytes))


def api_routes(
    store: Store,
    limit: int,
    public_url: str | None,
    gate: IngestGate,
    reads: ReadLane,
    max_artifact_bytes: int = rules.DEFAULT_MAX_ARTIFACT_BYTES,
) -> list[Route]:
    """The REST routes under /api/v1; reads run in `reads`, writes behind `gate`."""
    api = Api(store, limit, public_url, gate, reads)
    api.max_artifact_bytes = max_artifact_bytes
    one = "/api/v1/recordings/{recording_id}"
    return [
        route_by_method("/api/v1/recordings", GET=api.list, POST=api.register),
        route_by_method(one, GET=api.get, PATCH=api.patch, DELETE=api.delete),
        Route(one + "/records", api.records, methods=["GET"]),
        Route(one + "/alerts", api.alerts, methods=["GET"]),
        Route(one + "/distributions", api.distributions, methods=["GET"]),
        Route(one + "/texts", api.texts, methods=["GET"]),
        Route(one + "/requirements", api.requirements, methods=["GET"]),
        Route("/api/v1/limits", api.limits, methods=["GET"]),
    ]


def route_by_method(path: str, **handlers: Handler) -> Route:
    """One route for several methods, so a 405 lists every allowed method in Allow."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(handlers))


def json_body(request: Request, body: bytes) -> dict[str, Any]:
    """A REST body that must be a JSON object; 400 with the reason when it is anything else."""
    try:
        return json_document(body, f"{request.method} {request.url.path}")
    except MalformedBody as exc:
        raise ApiError(400, str(exc)) from None


def check_grant(request: Request, project_id: str | None) -> None:
    """403 when the request's token is scoped to another project than `project_id`."""
    grant: Grant = request.state.grant
    if not grant.allows(project_id):
        raise ApiError(403, f"this token may not access project {project_id or ''!r}")
