"""The HTML pages: the runs table (`/`, `/projects/{id}`), one run, and the comparison.

The server renders the frame and embeds each run's flat row as JSON; the static scripts draw the
table (sort, filter, columns, selection), the uPlot charts (series from `/api/v1/series`,
appended live while a run is running), the hyperparameter diff and the parallel coordinates.
Nothing is loaded from outside the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from markov_otel.rules import valid_id
from markov_otel.server.artifact_page import artifacts_section, image_index
from markov_otel.server.auth import Grant
from markov_otel.server.browser_auth import set_session_cookie
from markov_otel.server.distribution_page import distributions_section, texts_section
from markov_otel.server.distributions import DISTRIBUTION, TEXT, distribution_doc, text_doc
from markov_otel.server.lanes import ReadLane
from markov_otel.server.layout import layout
from markov_otel.server.page_data import duration_seconds, embed_json, flat, run_row
from markov_otel.server.page_writes import page_csrf
from markov_otel.server.records import jsonable
from markov_otel.server.runs_table import runs_doc
from markov_otel.server.series import MAX_IDS
from markov_otel.server.storage import Store

__all__ = ["page_routes"]

Handler = Callable[[Request], Awaitable[Response]]
_CHART_SCRIPTS = ("view.js", "panels.js", "vendor/uplot/uPlot.iife.min.js", "charts.js")


def page_routes(store: Store, reads: ReadLane) -> list[Route]:
    """The page routes, each accepting `?token=` once (it moves to a cookie); their reads run
    in `reads`."""
    return [
        Route("/", with_token_cookie(lambda r: list_page(store, reads, r, None)), methods=["GET"]),
        Route(
            "/projects/{project_id}",
            with_token_cookie(lambda r: list_page(store, reads, r, r.path_params["project_id"])),
            methods=["GET"],
        ),
        Route(
            "/recordings/{recording_id}",
            with_token_cookie(lambda r: recording_page(store, reads, r)),
            methods=["GET"],
        ),
        Route(
            "/compare", with_token_cookie(lambda r: compare_page(store, reads, r)), methods=["GET"]
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
        set_session_cookie(response, request, token)
        return response

    return page


def _data(element_id: str, doc: Any) -> str:
    return f'<script type="application/json" id="{element_id}">{embed_json(doc)}</script>'


async def list_page(
    store: Store, reads: ReadLane, request: Request, project_id: str | None
) -> Response:
    """The runs table of every visible project, or of one."""
    grant: Grant = request.state.grant
    if project_id is not None and not grant.allows(project_id):
        return layout("forbidden", "<p>This token may not see that project.</p>", 403)
    title = f"project {project_id}" if project_id else "recordings"
    doc = await reads.run(runs_doc, store, project_id or grant.project_id)
    doc |= {"project": project_id, "csrf": page_csrf(request)}
    body = f"""<h1>{escape(title)}</h1>
<div class="runs" id="runs" data-project="{escape(project_id or "")}">
<div class="toolbar">
<input type="search" id="runs-filter" size="40" aria-label="filter runs"
 placeholder="filter: text, or lr>0.01 opt=adam acc>=0.9">
<details class="filter-help" id="filter-help"><summary title="filter syntax">?</summary><div>
<p>Words separated by spaces; a run is shown when it matches every one.</p>
<table><tr><td><code>adam</code></td><td>text anywhere in the run (name, id, status,
values)</td></tr>
<tr><td><code>lr&gt;0.01</code></td><td>a column compared: <code>= != &gt; &gt;= &lt; &lt;=</code>
(numbers as numbers)</td></tr>
<tr><td><code>name~sweep</code></td><td>a column containing the text</td></tr>
<tr><td><code>opt.name!=sgd</code></td><td>a column different from a value</td></tr></table>
<p>Columns by their header (<code>lr</code>) or full name (<code>params.lr</code>,
<code>summary.val_acc</code>); an unknown column is named below the filter and left out.</p>
</div></details>
<select id="runs-status" aria-label="status"><option value="">any status</option></select>
<label class="muted"><input type="checkbox" id="runs-archived"> archived</label>
<details class="columns"><summary>Columns</summary><div id="runs-columns"></div></details>
<button type="button" id="runs-compare" disabled>Compare</button>
<button type="button" id="runs-csv" title="the rows and columns shown, as CSV">CSV</button>
<span id="runs-count" class="muted"></span>
</div>
<p class="error" id="runs-filter-note" hidden></p>
{_EDITOR}
<div class="table-wrap"><table class="runs-table" id="runs-table"><thead></thead><tbody></tbody>
</table></div>
<p class="empty" hidden>No recordings yet.</p>
</div>
{_data("runs-data", doc)}"""
    return layout(title, body, scripts=("view.js", "run_editor.js", "runs.js"))


async def recording_page(store: Store, reads: ReadLane, request: Request) -> Response:
    """One run: identity, parameters, summary, metadata, alerts and its charts (live)."""
    recording_id = request.path_params["recording_id"]
    recording = await reads.run(store.get, recording_id) if valid_id(recording_id) else None
    grant: Grant = request.state.grant
    if recording is None or not grant.allows(recording["project_id"]):
        return layout("not found", f"<p>No recording {escape(recording_id)}.</p>", 404)
    alerts = await reads.run(store.alerts, recording_id)
    arrays = await reads.run(store.events_named, recording_id, DISTRIBUTION)
    texts = await reads.run(store.events_named, recording_id, TEXT)
    marks = await reads.run(store.marks, [recording_id])
    last_step = await reads.run(store.last_step, recording_id)
    doc = {"runs": [run_row(recording)], "keys": recording["keys"]}
    run = recording | marks.get(recording_id, {"tags": []}) | {"last_step": last_step}
    header = {"id": recording_id, "csrf": page_csrf(request)}
    body = (
        _identity(run)
        + _EDITOR
        + _data("run-data", header)
        + _table("Hyperparameters", flat(recording["hyper_parameters"]))
        + _table("Summary", flat(recording["summary"]), "summary")
        + _table("Metadata", flat(recording["metadata"]))
        + _alerts(alerts)
        + await _files(request, recording_id)
        + _charts_section()
        + distributions_section(distribution_doc(arrays))
        + texts_section(text_doc(texts))
        + _data("charts-data", doc)
    )
    scripts = ("run_editor.js", "run_header.js", *_CHART_SCRIPTS, "images.js")
    return layout(recording["name"] or recording_id, body, scripts=scripts)


async def _files(request: Request, recording_id: str) -> str:
    """The run's artifacts and images (artifact_page.py), when the app keeps files."""
    if getattr(request.app.state, "blobs", None) is None:
        return ""
    return await run_in_threadpool(artifacts_section, request.app.state.store, recording_id)


async def compare_page(store: Store, reads: ReadLane, request: Request) -> Response:
    """The comparison of `?ids=A,B,…`: charts per key, parameter diff, parallel coordinates."""
    asked = [i for i in dict.fromkeys((request.query_params.get("ids") or "").split(",")) if i]
    grant: Grant = request.state.grant
    found, missing = await reads.run(_visible, store, grant, asked[:MAX_IDS])
    if not found:
        return layout("compare", "<p>None of the runs asked for can be shown.</p>", 404)
    keys = sorted({k for r in found for k in r["keys"]})
    marks = await reads.run(store.marks, [r["recording_id"] for r in found])
    rows = [run_row(r) | marks.get(r["recording_id"], {}) for r in found]
    doc = {"runs": rows, "keys": keys, "missing": missing}
    note = f'<p class="muted">Not found: {escape(", ".join(missing))}</p>' if missing else ""
    arrays = await _compared_arrays(store, reads, request, found)
    body = f"""<h1>Compare {len(found)} runs</h1>{note}
<div class="page-legend-box"><span class="muted" id="run-legend-key"></span>
<ul class="run-legend" id="run-legend"></ul></div>
<section><h2>Hyperparameters</h2>
<label class="muted"><input type="checkbox" id="only-diff"> only values that differ</label>
<div class="table-wrap"><table class="values params-diff" id="params-table"></table></div>
</section>
<section><h2>Parallel coordinates</h2>
<label>colour and last axis: <select id="pc-target"></select></label>
<div id="parcoords" class="parcoords"></div></section>
{_charts_section()}{arrays}{_data("charts-data", doc)}"""
    scripts = ("view.js", "panels.js", "groups.js", *_CHART_SCRIPTS[2:], "compare.js")
    return layout("compare", body, scripts=(*scripts, "quantiles.js", "images.js"))


async def _compared_arrays(
    store: Store, reads: ReadLane, request: Request, found: list[dict[str, Any]]
) -> str:
    """The comparison's distributions (quantiles.js draws a key's quantiles per run, read from
    /api/v1/quantiles) and images (images.js: one key, a column per run, at a slider's step);
    each section only when some run has one."""
    ids = [r["recording_id"] for r in found]
    keys = await reads.run(_distribution_keys, store, ids)
    out = ""
    if keys:
        out += f"""<section id="distributions"><h2>Distributions</h2>
<div class="controls"><label>key <select id="dist-key"></select></label>
<span class="muted">per run: the median in its p25&ndash;p75 and p5&ndash;p95 bands</span></div>
<div id="quantiles" class="quantiles"></div>{_data("distributions-data", {"keys": keys})}
</section>"""
    if getattr(request.app.state, "blobs", None) is not None:
        images = image_index(await reads.run(_artifacts_of, store, ids))
        if images:
            out += f"""<section id="images"><h2>Images</h2>
<div class="controls"><label>key <select id="image-key"></select></label></div>
<div class="image-viewer" id="image-compare"></div>{_data("images-data", {"images": images})}
</section>"""
    return out


def _artifacts_of(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each of `ids`' artifacts (the artifact index is in the database: artifactindex.py)."""
    return {rid: store.artifacts(rid) for rid in ids}


def _distribution_keys(store: Store, ids: list[str]) -> list[str]:
    """The keys of the recorded arrays of any of `ids`."""
    return sorted(
        {str(attrs["key"]) for rid in ids for _, attrs in store.events_named(rid, DISTRIBUTION)}
    )


def _visible(store: Store, grant: Grant, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    found, missing = [], []
    for rid in ids:
        recording = store.get(rid) if valid_id(rid) else None
        if recording is None or not grant.allows(recording["project_id"]):
            missing.append(rid)
        else:
            found.append(recording)
    return found, missing


def _charts_section() -> str:
    return """<section class="metrics"><h2>Metrics</h2>
<div class="controls" id="chart-controls">
<label>smoothing <input type="range" id="smoothing" min="0" max="0.99" step="0.01" value="0">
<output id="smoothing-value">0</output></label>
<label><input type="checkbox" id="log-scale"> log scale</label>
<label>x axis <select id="x-axis"><option value="step">step</option>
<option value="relative">relative time</option><option value="wall">wall time</option>
</select></label>
<span class="muted">drag to zoom, double-click to reset</span>
<span id="live-state" class="muted"></span>
</div>
<div class="charts" id="charts"><p class="muted" id="charts-empty">Loading…</p></div></section>"""


def _identity(r: dict[str, Any]) -> str:
    """The run's header: name, facts, tags and notes, each element named (`data-fact`, ids) for
    run_header.js, which keeps them current while the page is open."""
    duration = duration_seconds(r)
    facts = [
        ("id", r["recording_id"]),
        ("project", r["project_id"]),
        ("status", r["status"]),
        ("step", "" if r["last_step"] is None else str(r["last_step"])),
        ("duration", "" if duration is None else _duration(duration)),
        ("model", f"{r['model_class']} {r['model_id']}".strip()),
        ("dataset", r["dataset_id"]),
        ("points", str(r["points"])),
        ("started", _time(r["started_at"])),
        ("ended", _time(r["ended_at"])),
        ("uploaded", _time(r["created_at"])),
        ("updated", _time(r["updated_at"])),
    ]
    items = "".join(
        f'<dt{"" if v else " hidden"}>{k}</dt><dd data-fact="{k}"{"" if v else " hidden"}>'
        f"{escape(v)}</dd>"
        for k, v in facts
    )
    tags = " ".join(f'<span class="tag">{escape(t)}</span>' for t in r["tags"])
    name = escape(r["name"] or r["recording_id"])
    return (
        f'<div class="run-head"><h1 id="run-name">{name}</h1>'
        '<button type="button" class="edit-run" id="run-edit" hidden>Edit</button></div>'
        f'<dl class="identity">{items}</dl><p class="tags" id="run-tags">{tags}</p>'
        f'<p class="notes" id="run-notes"{"" if r["notes"] else " hidden"}>{escape(r["notes"])}</p>'
    )


def _duration(seconds: float) -> str:
    """`42.0 s`, `3 min 05 s`, `2 h 07 min` (run_header.js writes the same)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, hours = int(seconds // 60), int(seconds // 3600)
    if hours:
        return f"{hours} h {minutes % 60:02d} min"
    return f"{minutes} min {int(seconds % 60):02d} s"


_EDITOR = """<form class="run-editor" id="run-editor" hidden>
<label>name <input type="text" name="name" maxlength="256"></label>
<label>tags <input type="text" name="tags" placeholder="space-separated"></label>
<label class="wide">notes <textarea name="notes" rows="3"></textarea></label>
<button type="submit">Save</button> <button type="button" name="cancel">Cancel</button>
<span class="error" id="run-editor-note" role="alert"></span></form>"""
"""The one form that edits a run's name, tags and notes (run_editor.js), on both pages."""


def _time(stamp: str | None) -> str:
    """A stored ISO 8601 UTC time as `2025-05-01 05:09:00 UTC`; "" when unknown."""
    return f"{stamp[:19].replace('T', ' ')} UTC" if stamp else ""


def _table(title: str, values: dict[str, Any], name: str = "") -> str:
    """A section of names and values; `name` keeps it on the page even when empty (hidden), so
    a script can fill it in later (the summary of a live run)."""
    if not values and not name:
        return ""
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>"
        for k, v in sorted(values.items())
    )
    named = f' id="{name}"' if name else ""
    hidden = "" if values else " hidden"
    return f'<section{named}{hidden}><h2>{title}</h2><table class="values">{rows}</table></section>'


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
