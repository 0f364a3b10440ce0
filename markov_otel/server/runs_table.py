"""The runs table's data: embedded in the page (`/`, `/projects/{id}`), and read again live.

An open runs table asks `GET /api/v1/runs-table?since=CURSOR` at its own pace with the ETag it
has. The tag is made of each recording's id, updated_at, points and status
(`Store.recordings_state`: one scan of narrow columns, no JSON), which every batch, PATCH, tag or
archive rewrites and a delete or a new run changes; so while nothing changes an open page costs
that scan and a bodiless 304. A change costs only the rows updated since the cursor (the latest
updated_at the page has, which every answer carries), less `OVERLAP` so that a transaction that
committed late (another worker process) is not missed, and the ids of every run (a deleted one
leaves the page). Without `since`, all the rows and the keys, as the page embeds them.

Open tables ask the same questions: while ingest works the read lane paces reads, and the
polls that queue meanwhile ask one state read in flight between them (`Flights`), and the pages
whose cursor and tag agree one answer, built once and kept by its tag (`Answers`): a hundred
open tables queued together cost one state read and one answer, not one each.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.server.api import check_grant
from markov_otel.server.auth import Grant
from markov_otel.server.bodies import ApiError
from markov_otel.server.fields import text
from markov_otel.server.freshness import Answers, Flights, not_modified, recordings_tag, tagged
from markov_otel.server.lanes import ReadLane
from markov_otel.server.page_data import run_row
from markov_otel.server.records import jsonable
from markov_otel.server.storage import Store

__all__ = ["OVERLAP", "RUNS_TABLE_PATH", "changed_doc", "runs_doc", "runs_table_routes"]

RUNS_TABLE_PATH = "/api/v1/runs-table"
OVERLAP = timedelta(seconds=5)
"""How far before its cursor a page's next answer looks again (commits of other processes that
land out of their updated_at order)."""


def runs_doc(store: Store, project_id: str | None) -> dict[str, Any]:
    """The rows of every recording (of a project) with their tags and archived mark, and every
    key any of them has (the metric columns). Blocking: run it in the read lane."""
    recordings = store.list_recordings(project_id)
    marks = store.marks(None)
    rows = [run_row(r) | marks.get(r["recording_id"], {}) for r in recordings]
    cursor = max((r["updated_at"] for r in recordings), default="")
    doc = {"project": project_id, "runs": rows, "keys": store.series_keys(project_id)}
    return doc | {"cursor": cursor}


def changed_doc(store: Store, state: list[dict[str, Any]], since: str) -> dict[str, Any]:
    """The rows of the recordings of `state` updated after `since` (an ISO time), the ids of
    all of them, and the cursor of the next ask. Blocking: run it in the read lane."""
    ids = [r["recording_id"] for r in state if r["updated_at"] > since]
    found = [r for r in map(store.get, ids) if r is not None]
    marks = store.marks(ids)
    rows = [run_row(r) | marks.get(r["recording_id"], {}) for r in found]
    every = [r["recording_id"] for r in state]
    cursor = max((r["updated_at"] for r in state), default="")
    return {"runs": rows, "ids": every, "delta": True, "cursor": cursor}


def looked_back(since: str) -> str:
    """`since` less OVERLAP, as stored times are written (400 for a value not an ISO time)."""
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise ApiError(
            400, f"since={since[:64]!r} is not an ISO 8601 time: send the cursor an answer gave"
        ) from None
    return (moment - OVERLAP).isoformat(timespec="microseconds")


def runs_table_routes(store: Store, reads: ReadLane) -> list[Route]:
    """GET /api/v1/runs-table[?project_id=P][&since=CURSOR]: the runs table's rows (those
    changed since the cursor), 304 while unchanged."""
    flights, kept = Flights(), Answers()

    def body(
        state: list[dict[str, Any]], scope: str | None, after: str | None, project: Any
    ) -> bytes:
        doc = runs_doc(store, scope) if after is None else changed_doc(store, state, after)
        doc["project"] = project
        return json.dumps(jsonable(doc), allow_nan=False, separators=(",", ":")).encode()

    async def answer(tag: str, *args: Any) -> bytes:
        known = kept.get(tag)  # asked by another page since the last change
        if known is None:
            known = await reads.run(body, *args)
            kept.put(tag, known)
        return known

    async def runs_table(request: Request) -> Response:
        project_id = request.query_params.get("project_id")
        since = request.query_params.get("since")
        after = None if since is None else looked_back(since)
        grant: Grant = request.state.grant
        if project_id is not None:
            check_grant(request, text("project_id", project_id))
        scope = project_id or grant.project_id
        state = await flights.share(
            ("state", scope), lambda: reads.run(store.recordings_state, scope)
        )
        tag = recordings_tag(state, "runs-table", scope or "", since or "", project_id or "")
        unchanged = not_modified(request, tag)
        if unchanged is not None:
            return unchanged
        done = await flights.share(
            ("answer", tag), lambda: answer(tag, state, scope, after, project_id)
        )
        return tagged(Response(done, media_type="application/json"), tag)

    return [Route(RUNS_TABLE_PATH, runs_table, methods=["GET"])]
