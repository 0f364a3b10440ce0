"""The HTML pages: `/` and `/projects/{id}` list recordings, `/recordings/{id}` shows one run.

Plain server-rendered HTML with inline SVG charts (`charts.py`) and one small static script for
the hover readout; nothing is loaded from outside the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from markov_otel.server.auth import COOKIE, Grant
from markov_otel.server.charts import downsample, svg_chart
from markov_otel.server.records import jsonable, valid_id
from markov_otel.server.storage import Store

__all__ = ["page_routes"]

Handler = Callable[[Request], Awaitable[Response]]


def page_routes(store: Store) -> list[Route]:
    """The page routes, each accepting `?token=` once (it moves to a cookie)."""
    return [
        Route("/", with_token_cookie(lambda r: list_page(store, r, None)), methods=["GET"]),
        Route(
            "/projects/{project_id}",
            with_token_cookie(lambda r: list_page(store, r, r.path_params["project_id"])),
            methods=["GET"],
        ),
        Route(
            "/recordings/{recording_id}",
            with_token_cookie(lambda r: recording_page(store, r)),
            methods=["GET"],
        ),
    ]


def with_token_cookie(handler: Handler) -> Handler:
    """Turn `?token=T` into an HttpOnly cookie and redirect, so the token leaves the URL."""

    async def page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return await handler(request)
        if not (token.isascii() and token.isprintable()) or " " in token:
            # HTTP headers carry Latin-1 at most, and a cookie value not even that
            body = "<p>That token cannot be a cookie: a token is printable ASCII.</p>"
            return layout("bad token", body, 400)
        response = RedirectResponse(request.url.remove_query_params("token"), 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    return page


def layout(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        status_code=status,
        content=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · markov</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/page.css">
<script src="/static/page.js" defer></script>
</head><body><header><a href="/">markov recordings</a></header><main>
{body}
</main></body></html>""",
    )


async def list_page(store: Store, request: Request, project_id: str | None) -> Response:
    grant: Grant = request.state.grant
    if project_id is not None and not grant.allows(project_id):
        return layout("forbidden", "<p>This token may not see that project.</p>", 403)
    recordings = await run_in_threadpool(store.list_recordings, project_id or grant.project_id)
    by_project: dict[str, list[dict[str, Any]]] = {}
    for recording in recordings:
        by_project.setdefault(recording["project_id"], []).append(recording)
    sections = [_project_section(p, rs) for p, rs in sorted(by_project.items())]
    title = f"project {project_id}" if project_id else "recordings"
    body = f"<h1>{escape(title)}</h1>" + ("".join(sections) or "<p>No recordings yet.</p>")
    return layout(title, body)


def _project_section(project_id: str, recordings: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td><a href="/recordings/{escape(r["recording_id"])}">'
        f"{escape(r['name'] or r['recording_id'])}</a></td><td><code>{escape(r['recording_id'])}"
        f"</code></td><td>{escape(r['status'])}</td><td>{r['points']}</td>"
        f"<td>{_started(r)}</td></tr>"
        for r in recordings
    )
    link = (
        f'<a href="/projects/{escape(project_id)}">{escape(project_id)}</a>'
        if project_id
        else "(no project)"
    )
    return (
        f'<section class="project"><h2>{link}</h2><table class="recordings"><tr><th>name</th>'
        f"<th>id</th><th>status</th><th>points</th><th>started</th></tr>{rows}</table></section>"
    )


async def recording_page(store: Store, request: Request) -> Response:
    recording_id = request.path_params["recording_id"]
    recording = await run_in_threadpool(store.get, recording_id) if valid_id(recording_id) else None
    grant: Grant = request.state.grant
    if recording is None or not grant.allows(recording["project_id"]):
        return layout("not found", f"<p>No recording {escape(recording_id)}.</p>", 404)
    alerts = await run_in_threadpool(store.alerts, recording_id)
    charts = [await run_in_threadpool(_chart, store, recording_id, k) for k in recording["keys"]]
    body = (
        _identity(recording)
        + _table("Hyperparameters", recording["hyper_parameters"])
        + _table("Summary", recording["summary"])
        + _table("Metadata", recording["metadata"])
        + _alerts(alerts)
        + '<section><h2>Metrics</h2><div class="charts">'
        + ("".join(charts) or "<p>No points yet.</p>")
        + "</div></section>"
    )
    return layout(recording["name"] or recording_id, body)


def _chart(store: Store, recording_id: str, key: str) -> str:
    rows = store.records(recording_id, key)
    finite = [(s, float(v)) for s, v, _ in rows if not isinstance(v, str)]
    return svg_chart(key, downsample(finite), len(rows) - len(finite))


def _identity(r: dict[str, Any]) -> str:
    facts = [
        ("id", r["recording_id"]),
        ("project", r["project_id"]),
        ("status", r["status"]),
        ("model", f"{r['model_class']} {r['model_id']}".strip()),
        ("dataset", r["dataset_id"]),
        ("points", str(r["points"])),
        ("started", _time(r["started_at"])),
        ("ended", _time(r["ended_at"])),
        ("uploaded", _time(r["created_at"])),
        ("updated", _time(r["updated_at"])),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{escape(v)}</dd>" for k, v in facts if v)
    notes = f'<p class="notes">{escape(r["notes"])}</p>' if r["notes"] else ""
    return (
        f'<h1>{escape(r["name"] or r["recording_id"])}</h1><dl class="identity">{items}</dl>{notes}'
    )


def _time(stamp: str | None) -> str:
    """A stored ISO 8601 UTC time as `2025-05-01 05:09:00 UTC`; "" when unknown."""
    return f"{stamp[:19].replace('T', ' ')} UTC" if stamp else ""


def _started(r: dict[str, Any]) -> str:
    """The run's start; a run that never said when it started shows its upload time, marked."""
    if r["started_at"]:
        return escape(_time(r["started_at"]))
    return (
        f'<span title="upload time: the run sent no start">{escape(_time(r["created_at"]))}</span>'
    )


def _table(title: str, values: dict[str, Any]) -> str:
    if not values:
        return ""
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>"
        for k, v in sorted(jsonable(values).items())
    )
    return f'<section><h2>{title}</h2><table class="values">{rows}</table></section>'


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return ""
    columns = ("metric_name", "operation", "threshold", "value", "step", "text")
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{escape(str(jsonable(a.get(c, ''))))}</td>" for c in columns)
        + "</tr>"
        for a in alerts
    )
    return f'<section><h2>Alerts</h2><table class="alerts"><tr>{head}</tr>{rows}</table></section>'
