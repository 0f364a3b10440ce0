"""The runs table's data: embedded in the page (`/`, `/projects/{id}`), and read again live.

An open runs table asks `GET /api/v1/runs-table` at its own pace with the ETag it has. The tag is
made of each recording's id, updated_at, points and status (`Store.recordings_state`: one scan of
narrow columns, no JSON), which every batch, PATCH, tag or archive rewrites and a delete or a new
run changes; so while nothing changes an open page costs that scan and a bodiless 304, and only
a change costs the rows (recordings, their marks and the keys, as the page embeds them).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from markov_otel.server.api import check_grant, json_response
from markov_otel.server.auth import Grant
from markov_otel.server.fields import text
from markov_otel.server.freshness import not_modified, recordings_tag, tagged
from markov_otel.server.lanes import ReadLane
from markov_otel.server.page_data import run_row
from markov_otel.server.storage import Store

__all__ = ["RUNS_TABLE_PATH", "runs_doc", "runs_table_routes"]

RUNS_TABLE_PATH = "/api/v1/runs-table"


def runs_doc(store: Store, project_id: str | None) -> dict[str, Any]:
    """The rows of every recording (of a project) with their tags and archived mark, and every
    key any of them has (the metric columns). Blocking: run it in the read lane."""
    recordings = store.list_recordings(project_id)
    marks = store.marks(None)
    rows = [run_row(r) | marks.get(r["recording_id"], {}) for r in recordings]
    return {"project": project_id, "runs": rows, "keys": store.series_keys(project_id)}


def runs_table_routes(store: Store, reads: ReadLane) -> list[Route]:
    """GET /api/v1/runs-table[?project_id=P]: the runs table's rows, 304 while unchanged."""

    async def runs_table(request: Request) -> Response:
        project_id = request.query_params.get("project_id")
        grant: Grant = request.state.grant
        if project_id is not None:
            check_grant(request, text("project_id", project_id))
        scope = project_id or grant.project_id
        state = await reads.run(store.recordings_state, scope)
        tag = recordings_tag(state, "runs-table", scope or "")
        unchanged = not_modified(request, tag)
        if unchanged is not None:
            return unchanged
        doc = await reads.run(runs_doc, store, scope)
        doc["project"] = project_id
        return tagged(json_response(doc), tag)

    return [Route(RUNS_TABLE_PATH, runs_table, methods=["GET"])]
