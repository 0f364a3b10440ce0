"""The runs table and the run page's header kept live, and a run's name, notes and tags edited
on the pages (issue 24, goals 2 and 6), in headless Chromium; and the CSRF rules of page writes
(page_writes.py), over HTTP and from a page of another origin.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from browsing import Browsing
from otlp_bodies import new_id
from test_page import post_points

from markov_otel.server.runs_table import OVERLAP

T0 = 1_700_000_000_000_000_000
LIVE = 30_000  # ms: a few 2 s polls on a loaded machine


def run(backend: Backend, name: str, steps: int = 10, project: str = "") -> str:
    """A running recording named `name` with `steps` points of loss (in `project`)."""
    rid = new_id()
    points = [("loss", s, 1.0 / (s + 1), T0 + s) for s in range(steps)]
    more = {"markov.project.id": project} if project else {}
    post_points(backend, rid, points, **{"markov.recording.name": name}, **more)
    return rid


def patch(backend: Backend, rid: str, **changes: Any) -> None:
    answer = httpx.patch(
        f"{backend.url}/api/v1/recordings/{rid}", json=changes, headers=backend.headers
    )
    assert answer.status_code == 200, answer.text


def stored(backend: Backend, rid: str) -> dict[str, Any]:
    answer = httpx.get(f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def cells(page: Any, column: str) -> dict[str, str]:
    """{run id: text of `column`} of the runs table's rows."""
    index = page.evaluate(
        f"""() => [...document.querySelectorAll('#runs-table thead tr:last-child th')]
        .findIndex(th => th.dataset.col === {json.dumps(column)}) + 1"""
    )
    return dict(
        page.evaluate(
            f"""() => [...document.querySelectorAll('#runs-table tbody tr')].map(tr =>
            [tr.dataset.id, tr.cells[{index}].textContent.trim()])"""
        )
    )


def test_the_runs_table_shows_a_new_run_and_a_finished_one_without_reload_and_idles_on_304(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """An open runs table: while nothing changes it polls with the ETag it was given, which the
    server answers 304; a run registered meanwhile appears, a run that finishes shows
    `finished`, both without a reload."""
    first = run(backend, "first")
    page = browsing.page
    polls: list[tuple[str | None, str]] = []

    def is_poll(response: Any) -> bool:
        return "/api/v1/runs-table" in response.url

    def polled(response: Any) -> None:
        if is_poll(response):
            polls.append((response.request.all_headers().get("if-none-match"), response.url))

    page.on("response", polled)  # from the first read on
    browsing.sign_in("/")
    page.wait_for_selector("html[data-runs-ready='1']")
    # A page's events reach Python only while it waits on the page: wait on it for each read.
    while len(polls) < 3:
        page.wait_for_event("response", predicate=is_poll, timeout=LIVE)
    assert polls[0][0] is None, polls  # the first read has no validator yet
    assert len({tag for tag, _ in polls[1:]}) == 1 and polls[-1][0], polls
    # (Playwright shows the browser's revalidated copy as 200; the server's answer to that
    # very validator is the 304)
    assert "since=" in polls[-1][1]  # asking only for what changed since its last answer
    headers = {**backend.headers, "If-None-Match": polls[-1][0]}
    assert httpx.get(polls[-1][1], headers=headers).status_code == 304

    second = run(backend, "second")
    page.wait_for_selector("html[data-runs-ready='2']", timeout=LIVE)
    assert cells(page, "name") == {first: "first", second: "second"}
    patch(backend, first, status="finished", summary={"val_acc": 0.93})
    page.wait_for_function(
        f"""() => document.querySelector("#runs-table tr[data-id='{first}'] .status")
        .textContent === 'finished'""",
        timeout=LIVE,
    )
    assert cells(page, "status") == {first: "finished", second: "running"}
    assert page.url == backend.url + "/"  # never reloaded: the same document all along
    page.screenshot(path=str(screenshots / "runs-table-live.png"), full_page=True)
    assert browsing.errors == []


def test_the_run_header_follows_a_running_run_to_its_end_without_reload(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """The run page's header: step, points, summary and status change as batches and the final
    PATCH land, on the page first opened."""
    rid = run(backend, "header", steps=10)
    browsing.sign_in(f"/recordings/{rid}")
    page = browsing.page
    page.wait_for_selector("html[data-charts-ready='1']")
    fact = "() => document.querySelector('dd[data-fact=\"{}\"]').textContent"
    assert page.evaluate(fact.format("step")) == "9"
    assert page.evaluate(fact.format("status")) == "running"
    assert page.is_hidden("#summary")

    post_points(backend, rid, [("loss", s, 0.5, T0 + s) for s in range(10, 25)])
    page.wait_for_function(f"{fact.format('step')} === '24'", timeout=LIVE)
    assert page.evaluate(fact.format("points")) == "25"
    patch(backend, rid, status="finished", summary={"val": {"acc": 0.91}})
    page.wait_for_function(f"{fact.format('status')} === 'finished'", timeout=LIVE)
    assert page.is_visible("#summary")
    assert page.inner_text("#summary table") == "val.acc\t0.91"
    assert page.evaluate(fact.format("duration")).endswith(" s")
    page.screenshot(path=str(screenshots / "run-header-live.png"), full_page=True)
    assert browsing.errors == []


def test_an_edit_on_the_runs_table_is_stored_and_shown_on_the_open_run_page(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Name, tags and notes edited in place on the runs table are stored (read back through the
    API) and appear on the run's page open in another tab, without a reload; an edit on the run
    page is stored too."""
    rid = run(backend, "before")
    browsing.sign_in(f"/recordings/{rid}")
    run_page = browsing.page
    run_page.wait_for_selector("html[data-charts-ready='1']")
    table = browsing.context.new_page()
    table.goto(backend.url + "/")
    table.wait_for_selector("html[data-runs-ready='1']")

    table.click(f"button.edit[data-edit='{rid}']")
    table.fill("#run-editor input[name=name]", "after")
    table.fill("#run-editor input[name=tags]", "baseline  v2")
    table.fill("#run-editor textarea[name=notes]", "lr too high\n<b>not bold</b>")
    table.screenshot(path=str(screenshots / "runs-table-edit.png"), full_page=True)
    table.click("#run-editor button[type=submit]")
    table.wait_for_selector("#run-editor", state="hidden")
    back = stored(backend, rid)
    assert (back["name"], back["tags"], back["notes"]) == (
        "after", ["baseline", "v2"], "lr too high\n<b>not bold</b>"
    )  # fmt: skip
    table.wait_for_function(
        f"() => document.querySelector(\"tr[data-id='{rid}'] a\").textContent === 'after'",
        timeout=LIVE,
    )

    run_page.wait_for_function(
        "() => document.getElementById('run-name').textContent === 'after'", timeout=LIVE
    )
    assert run_page.inner_text("#run-notes") == "lr too high\n<b>not bold</b>"
    assert run_page.locator("#run-notes b").count() == 0  # text, never markup
    assert run_page.locator("#run-tags .tag").all_inner_texts() == ["baseline", "v2"]

    run_page.click("#run-edit")
    run_page.fill("#run-editor textarea[name=notes]", "rerun with lr/10")
    run_page.click("#run-editor button[type=submit]")
    run_page.wait_for_selector("#run-editor", state="hidden")
    assert stored(backend, rid)["notes"] == "rerun with lr/10"
    assert run_page.inner_text("#run-notes") == "rerun with lr/10"
    run_page.screenshot(path=str(screenshots / "run-page-edited.png"), full_page=True)
    assert browsing.errors == []


class _Attacker(BaseHTTPRequestHandler):
    """A page of another origin (the same host, another port) that tries to edit a run."""

    page = b""

    def do_GET(self) -> None:  # http.server calls it by this name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_of_another_origin_cannot_edit_a_run_by_form_or_fetch(
    browsing: Browsing, backend: Backend
) -> None:
    """A signed-in browser opens a page of a second local server: its fetch PATCH (with
    credentials) and its auto-posted form (a JSON body as text/plain) to the run both fail, the
    form's answer is a 403 naming the other site, and the run's name is unchanged."""
    rid = run(backend, "target")
    browsing.sign_in("/")
    target = f"{backend.url}/api/v1/recordings/{rid}"
    _Attacker.page = f"""<!doctype html><body><script>
fetch({json.dumps(target)}, {{method: "PATCH", credentials: "include",
  headers: {{"Content-Type": "application/json"}}, body: '{{"name": "pwned by fetch"}}'}})
  .catch(() => null).then(() => document.forms[0].submit());
</script><form method="post" enctype="text/plain" action="{html.escape(target)}">
<input name='{{"name": "pwned by form", "x": "' value='"}}'></form></body>""".encode()
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page = browsing.page
        posted = lambda r: r.url == target and r.request.method == "POST"  # noqa: E731
        with page.expect_response(posted, timeout=LIVE) as answer:
            page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        assert answer.value.status == 403
        assert "from another site (Sec-Fetch-Site: same-site)" in answer.value.json()["error"]
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert stored(backend, rid)["name"] == "target"


def _csrf_of_page(backend: Backend, cookie: str) -> str:
    """The CSRF token the runs table embeds for the session whose cookie is `cookie`."""
    answer = httpx.get(backend.url + "/", cookies={"markov_token": cookie})
    assert answer.status_code == 200
    found = re.search(r'<script type="application/json" id="runs-data">(.*?)</script>', answer.text)
    assert found is not None
    token: str = json.loads(found.group(1))["csrf"]
    return token


def _page_patch(
    backend: Backend, rid: str, cookie: str, csrf: str | None, body: dict[str, Any], **more: str
) -> httpx.Response:
    headers = {"Sec-Fetch-Site": "same-origin", **more}
    if csrf is not None:
        headers["X-Markov-CSRF"] = csrf
    return httpx.patch(
        f"{backend.url}/api/v1/recordings/{rid}",
        json=body,
        headers=headers,
        cookies={"markov_token": cookie},
    )


@pytest.fixture
def two_tokens(tmp_path: Path) -> Iterator[Backend]:
    """A backend of two tokens for every project: test-token and `second`."""
    backend = Backend(tmp_path / "two", extra_args=["--token", "second"])
    try:
        yield backend
    finally:
        backend.stop()


def test_a_page_write_without_the_right_csrf_token_is_403_naming_why_and_changes_nothing(
    two_tokens: Backend,
) -> None:
    """With the sign-in cookie: no X-Markov-CSRF, another session's token, Sec-Fetch-Site none,
    or a field a page may not change are each a 403 saying so; the run is unchanged. The page's
    own token edits name and tags."""
    backend = two_tokens
    rid = run(backend, "kept")
    csrf = _csrf_of_page(backend, backend.token)
    other = _csrf_of_page(backend, "second")  # a page of another session
    assert csrf and other and csrf != other
    refusals = {
        "missing CSRF token": _page_patch(backend, rid, backend.token, None, {"name": "x"}),
        "wrong CSRF token": _page_patch(backend, rid, backend.token, other, {"name": "x"}),
        "(Sec-Fetch-Site: none, not same-origin)": _page_patch(
            backend, rid, backend.token, csrf, {"name": "x"}, **{"Sec-Fetch-Site": "none"}
        ),
        "may change only name, notes and tags, not status": _page_patch(
            backend, rid, backend.token, csrf, {"name": "x", "status": "failed"}
        ),
    }
    for reason, answer in refusals.items():
        assert answer.status_code == 403, (reason, answer.text)
        assert reason in answer.json()["error"], (reason, answer.text)
    back = stored(backend, rid)
    assert (back["name"], back["status"], back["notes"]) == ("kept", "running", "")

    done = _page_patch(backend, rid, backend.token, csrf, {"name": "new", "tags": ["a"]})
    assert done.status_code == 200, done.text
    back = stored(backend, rid)
    assert (back["name"], back["tags"]) == ("new", ["a"])


def test_a_page_signed_in_with_a_read_token_or_another_projects_token_cannot_edit_the_run(
    tmp_path: Path,
) -> None:
    """A cookie of a token scoped to project A, with its own valid CSRF token, edits A's run and
    gets 404 for B's (as for a run that does not exist); a read token (--read-token) opens the
    pages but its edit, with its valid CSRF token, is a 403 saying it reads only, and so is its
    bearer PATCH. B's run and the read token's target are unchanged."""
    extra = ["--token", "team-a:A", "--read-token", "viewer"]
    backend = Backend(tmp_path / "scoped", extra_args=extra)
    try:
        mine, theirs = new_id(), new_id()
        for rid, project in ((mine, "A"), (theirs, "B")):
            post_points(backend, rid, [("loss", 0, 1.0, T0)], **{"markov.project.id": project,
                        "markov.recording.name": project})  # fmt: skip
        csrf = _csrf_of_page(backend, "team-a")
        refused = _page_patch(backend, theirs, "team-a", csrf, {"name": "pwned"})
        assert refused.status_code == 404, refused.text
        done = _page_patch(backend, mine, "team-a", csrf, {"name": "renamed"})
        assert done.status_code == 200, done.text

        viewer = _csrf_of_page(backend, "viewer")  # the read token opens the runs table
        as_page = _page_patch(backend, theirs, "viewer", viewer, {"name": "viewed"})
        url, bearer = f"{backend.url}/api/v1/recordings/{theirs}", "Bearer viewer"
        as_client = httpx.patch(url, json={"name": "viewed"}, headers={"Authorization": bearer})
        for answer in (as_page, as_client):
            assert answer.status_code == 403, answer.text
            assert "this token reads only" in answer.json()["error"]
        assert (stored(backend, mine)["name"], stored(backend, theirs)["name"]) == ("renamed", "B")
    finally:
        backend.stop()


def test_an_unchanged_runs_table_is_304_and_a_tag_makes_it_200(server: Backend) -> None:
    """GET /api/v1/runs-table with its ETag: 304 while nothing changes; a tag (which touches no
    recording column but the mark) and a new run each make it answer the rows again."""
    backend = server  # on SQLite, then on PostgreSQL
    project = new_id()  # the database may hold others' runs (a shared PostgreSQL)
    rid = run(backend, "one", project=project)
    url = f"{backend.url}/api/v1/runs-table?project_id={project}"
    first = httpx.get(url, headers=backend.headers)
    assert first.status_code == 200 and [r["id"] for r in first.json()["runs"]] == [rid]
    tag = first.headers["etag"]
    again = httpx.get(url, headers={**backend.headers, "If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    patch(backend, rid, tags=["best"])
    tagged = httpx.get(url, headers={**backend.headers, "If-None-Match": tag})
    assert tagged.status_code == 200 and tagged.json()["runs"][0]["tags"] == ["best"]
    newer = run(backend, "two", project=project)
    grown = httpx.get(url, headers={**backend.headers, "If-None-Match": tagged.headers["etag"]})
    assert grown.status_code == 200
    assert {r["id"] for r in grown.json()["runs"]} == {rid, newer}


def test_asked_with_its_cursor_the_runs_table_answers_only_the_rows_that_changed(
    server: Backend,
) -> None:
    """`since=` the cursor of the last answer: 304 while nothing changed; after one run's batch,
    that run's row alone (and every id); a deleted run leaves the ids; a bad cursor is a 400."""
    backend = server  # on SQLite, then on PostgreSQL
    project = new_id()  # the database may hold others' runs (a shared PostgreSQL)
    quiet, busy, doomed = (run(backend, name, project=project) for name in ("q", "b", "d"))
    url = backend.url + "/api/v1/runs-table"
    whole = httpx.get(url, params={"project_id": project}, headers=backend.headers).json()
    assert len(whole["runs"]) == 3 and whole["cursor"]
    asked = {"project_id": project, "since": whole["cursor"]}
    first = httpx.get(url, params=asked, headers=backend.headers)
    assert first.status_code == 200  # the rows of the last OVERLAP seconds: all three, new
    revalidating = {**backend.headers, "If-None-Match": first.headers["etag"]}
    again = httpx.get(url, params=asked, headers=revalidating)
    assert again.status_code == 304

    # a cursor OVERLAP past the last update before the batch: the answer looks back to it
    last = datetime.fromisoformat(stored(backend, doomed)["updated_at"])
    cursor = (last + OVERLAP).isoformat(timespec="microseconds")
    post_points(backend, busy, [("loss", 99, 0.1, T0 + 99)])
    since_busy = httpx.get(
        url, params={"project_id": project, "since": cursor}, headers=backend.headers
    ).json()
    assert since_busy["delta"] is True
    assert sorted(since_busy["ids"]) == sorted([quiet, busy, doomed])
    assert [(r["id"], r["points"]) for r in since_busy["runs"]] == [(busy, 11)]

    assert httpx.delete(f"{backend.url}/api/v1/recordings/{doomed}",
                        headers=backend.headers).status_code == 204  # fmt: skip
    gone = httpx.get(
        url, params={"project_id": project, "since": since_busy["cursor"]}, headers=backend.headers
    ).json()
    assert sorted(gone["ids"]) == sorted([quiet, busy])
    bad = httpx.get(
        url, params={"project_id": project, "since": "yesterday"}, headers=backend.headers
    )
    assert bad.status_code == 400 and "not an ISO 8601 time" in bad.json()["error"]
