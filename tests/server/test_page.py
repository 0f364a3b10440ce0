"""The experiment pages in headless Chromium (Playwright): runs table, comparison, one run, live.

Runs are recorded for real (online recorders into the backend subprocess, or OTLP bodies POSTed
to it); the browser signs in through the login form like a person. Screenshots go to the
directory printed at the end of the test run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend, online_recorder
from browsing import Browsing
from otlp_bodies import metrics_json_bytes, new_id

T0 = 1_700_000_000_000_000_000


def record_run(backend: Backend, name: str, lr: float, *, odd: bool = False) -> str:
    """A real online recording: 400 steps of loss and acc, nested hyperparameters, a summary."""
    recorder = online_recorder(
        backend.url, backend.token, name, project_id="vision",
        hyper_parameters={"lr": lr, "batch": 32, "optimizer": {"name": "adam", "beta1": 0.9}},
    )  # fmt: skip
    with recorder:
        for step in range(400):
            loss = math.exp(-lr * step / 4) + 0.02 * math.sin(step)
            if odd and step in (200, 300):
                loss = math.nan if step == 200 else math.inf
            recorder.add_record({"loss": loss, "acc": 1 - math.exp(-lr * step / 4)}, step=step)
        recorder.summary.add_validation_accuracy(round(1 - math.exp(-lr * 100), 4))
    return str(recorder.recording_id)


def post_points(backend: Backend, rid: str, points: list[Any], **resource: Any) -> None:
    headers = {**backend.headers, "Content-Type": "application/json"}
    body = metrics_json_bytes(rid, points, **resource)
    assert httpx.post(backend.url + "/v1/metrics", content=body, headers=headers).status_code == 200


def hover(page: Any, at: float, text: str) -> list[str]:
    """Move the mouse over the loss chart; the legend values once they show `text`."""
    plot = page.locator("figure.chart[data-key='loss'] .u-over")
    box = plot.bounding_box()
    plot.hover(position={"x": box["width"] * at, "y": box["height"] / 2})
    values = "figure.chart[data-key='loss'] .legend-value"
    page.wait_for_function(
        f'() => [...document.querySelectorAll("{values}")]'
        f".some(e => e.textContent.includes('{text}'))"
    )
    return list(page.locator(values).all_inner_texts())


@pytest.mark.slow
def test_select_three_runs_and_compare_them(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Table → select 3 of 4 runs → Compare: 3 legends per chart, hover reads 3 values,
    smoothing and log scale switch, differing hyperparameters highlighted."""
    names = {"lr-0.1": 0.1, "lr-0.03": 0.03, "lr-0.01": 0.01, "lr-0.3": 0.3}
    ids = {n: record_run(backend, n, lr, odd=n == "lr-0.1") for n, lr in names.items()}
    browsing.sign_in("/")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='4']")
    headers = page.locator("#runs-table thead th").all_inner_texts()
    assert {"optimizer.name", "optimizer.beta1", "lr", "batch", "validation_accuracy"} <= {
        h.strip(" ▲▼") for h in headers
    }
    page.screenshot(path=str(screenshots / "runs-table.png"), full_page=True)
    chosen = ["lr-0.1", "lr-0.03", "lr-0.01"]
    for name in chosen:
        page.check(f"input.pick[data-id='{ids[name]}']")
    assert page.inner_text("#runs-compare") == "Compare 3 runs"
    page.click("#runs-compare")
    page.wait_for_url("**/compare?ids=*")
    page.wait_for_selector("html[data-charts-ready='2']")
    assert set(page.url.split("ids=")[1].split(",")) == {ids[n] for n in chosen}

    for key in ("acc", "loss"):
        legend = page.locator(f"figure.chart[data-key='{key}'] .legend-name").all_inner_texts()
        assert sorted(legend) == sorted(chosen)
    values = hover(page, 0.4, " @ step ")
    assert len(values) == 3 and all(" @ step " in v for v in values), values
    assert page.is_visible("figure.chart[data-key='loss'] .marks-note")
    assert page.get_attribute("#params-table tr[data-name='lr']", "class") == "differs"
    assert page.get_attribute("#params-table tr[data-name='batch']", "class") == "same"
    assert page.locator("#params-table tr[data-name='optimizer']").count() == 0  # flattened
    assert page.locator("#parcoords path.pc-line").count() == 3
    page.screenshot(path=str(screenshots / "compare.png"), full_page=True)

    page.locator("#smoothing").evaluate(
        "e => { e.value = '0.9'; e.dispatchEvent(new Event('input')); }"
    )
    page.check("#log-scale")
    chart = "MarkovCharts.charts.loss.u"
    assert browsing.js(f"{chart}.series[2].show && {chart}.series[1].alpha") == 0.25
    assert browsing.js(f"{chart}.scales.y.distr") == 3
    values = hover(page, 0.5, "(raw ")
    assert len(values) == 3 and all("(raw " in v for v in values), values
    page.screenshot(path=str(screenshots / "compare-smoothed-log.png"), full_page=True)
    assert browsing.errors == []


def test_the_printed_experiment_url_opens_after_signing_in(
    browsing: Browsing, backend: Backend, screenshots: Path, tmp_path: Path
) -> None:
    """The URL the example prints: login form (401), a wrong token is refused, the right one
    lands on that run's page; an API client still gets the JSON 401."""
    import subprocess
    import sys

    env = {"MARKOV_ENDPOINT": backend.url, "MARKOV_API_KEY": backend.token,
           "MARKOV_DIR": str(tmp_path / "runs"), "MARKOV_CAPTURE_ENVIRONMENT": "0"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "markov_otel.example", "--online", "--epochs", "20"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**__import__("os").environ, **env},
    )  # fmt: skip
    url = next(line.split("experiment:")[1].strip() for line in done.stdout.splitlines()
               if "experiment:" in line)  # fmt: skip
    assert url.startswith(backend.url + "/recordings/")
    as_api = httpx.get(url, headers={"Accept": "application/json"})
    assert as_api.status_code == 401 and "bearer token" in as_api.json()["error"]

    page = browsing.page
    answer = page.goto(url)
    assert answer is not None and answer.status == 401
    page.screenshot(path=str(screenshots / "login.png"))
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")
    assert "not one this backend accepts" in page.inner_text(".login .error")
    page.fill("input[name=token]", backend.token)
    page.click("button[type=submit]")
    page.wait_for_url(url)
    page.wait_for_selector("html[data-charts-ready]")
    assert page.inner_text("h1") == "logreg-blobs"
    cookie = next(c for c in browsing.context.cookies() if c["name"] == "markov_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browsing.errors == []


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/compare?ids=a,b", "/compare?ids=a,b"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_login_redirects_only_to_a_path_on_this_site(
    backend: Backend, target: str, location: str
) -> None:
    """POST /login with a good token: 303 to `next` if it is a same-site path, else to /."""
    form = {"token": backend.token, "next": target}
    answer = httpx.post(backend.url + "/login", data=form)
    assert answer.status_code == 303
    assert answer.headers["location"] == location
    assert "httponly" in answer.headers["set-cookie"].lower()


def test_a_wrong_token_sets_no_cookie(backend: Backend) -> None:
    """POST /login with a wrong token answers the form again (401) and sets nothing."""
    answer = httpx.post(backend.url + "/login", data={"token": "nope", "next": "/"})
    assert answer.status_code == 401 and "set-cookie" not in answer.headers
    assert 'name="token"' in answer.text


def test_the_cookie_opens_reads_but_writes_nothing_without_the_pages_csrf_token(
    backend: Backend,
) -> None:
    """With only the cookie: GET pages, series and quantiles work; a PATCH is a 403 naming the
    missing CSRF token (page_writes.py), a DELETE or an OTLP POST a 401; the notes stay empty."""
    rid = new_id()
    post_points(backend, rid, [("loss", 0, 1.0, T0)])
    jar = {"markov_token": backend.token}
    with httpx.Client(base_url=backend.url, cookies=jar) as client:
        assert client.get(f"/recordings/{rid}").status_code == 200
        assert client.get("/api/v1/series", params={"ids": rid, "key": "loss"}).status_code == 200
        assert client.get("/api/v1/quantiles", params={"ids": rid, "key": "w"}).status_code == 200
        patched = client.patch(f"/api/v1/recordings/{rid}", json={"notes": "x"})
        assert patched.status_code == 403 and "missing CSRF token" in patched.json()["error"]
        assert client.delete(f"/api/v1/recordings/{rid}").status_code == 401
        body = metrics_json_bytes(rid, [("loss", 1, 2.0, T0)])
        posted = client.post("/v1/metrics", content=body,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert posted.status_code == 401
    stored = httpx.get(f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers).json()
    assert stored["notes"] == "" and stored["points"] == 1


@pytest.mark.slow
def test_a_running_recording_page_appends_new_points_live(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """New points (and a new key) appear without a reload, read with since_step only."""
    rid = new_id()
    post_points(backend, rid, [("loss", s, 1 / (s + 1), T0 + s * 10**8) for s in range(50)],
                **{"markov.recording.name": "live-run"})  # fmt: skip
    browsing.sign_in(f"/recordings/{rid}")
    page = browsing.page
    page.wait_for_selector("html[data-charts-ready='1']")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/series" in r.url else None)
    count = "figure.chart[data-key='{}'] figcaption small"
    assert page.inner_text(count.format("loss")).startswith("50 points")
    post_points(backend, rid, [("loss", s, 1 / (s + 1), T0 + s * 10**8) for s in range(50, 80)])
    post_points(backend, rid, [("lr", s, 0.1, T0 + s * 10**8) for s in range(80)])
    page.wait_for_function(
        "() => document.querySelector(\"figure.chart[data-key='loss'] figcaption small\")"
        ".textContent.startsWith('80 points')",
        timeout=30_000,
    )
    page.wait_for_selector("figure.chart[data-key='lr']", timeout=30_000)
    loss_reads = [u for u in asked if "key=loss" in u]
    assert loss_reads and "since_step=49" in loss_reads[0], asked
    assert all("since_step=" in u for u in loss_reads), asked
    page.screenshot(path=str(screenshots / "run-live.png"), full_page=True)
    assert browsing.errors == []


@pytest.mark.slow
def test_an_open_live_page_asks_with_its_etag_and_reads_no_series_while_nothing_changes(
    browsing: Browsing, backend: Backend
) -> None:
    """A running recording's page polls it with If-None-Match and, answered 304 (nothing new),
    asks for no series; one more batch, and it reads that key again from the last step."""
    rid = new_id()
    post_points(backend, rid, [("loss", s, 1.0, T0 + s) for s in range(20)])
    browsing.sign_in(f"/recordings/{rid}")
    page = browsing.page
    page.wait_for_selector("html[data-charts-ready='1']")
    series_asked: list[str] = []
    polls: list[tuple[str | None, int]] = []
    page.on("request", lambda r: series_asked.append(r.url) if "/api/v1/series" in r.url else None)

    def is_poll(response: Any) -> bool:
        return bool(response.url.endswith(f"/api/v1/recordings/{rid}"))

    def polled(response: Any) -> None:
        if is_poll(response):
            validator = response.request.all_headers().get("if-none-match")
            polls.append((validator, response.status))

    page.on("response", polled)
    # Three polls seen here, whatever the page counted before the listener was on: a page's
    # events reach Python only while it waits on the page, so wait on the page for each one.
    while len(polls) < 3:
        page.wait_for_event("response", predicate=is_poll, timeout=30_000)
    assert series_asked == []
    assert len(polls) >= 3 and all(validator for validator, _ in polls[1:]), polls
    post_points(backend, rid, [("loss", 20, 2.0, T0 + 20)])
    page.wait_for_function(
        "() => document.querySelector(\"figure.chart[data-key='loss'] figcaption small\")"
        ".textContent.startsWith('21 points')",
        timeout=30_000,
    )
    assert series_asked and all("since_step=19" in u for u in series_asked), series_asked
    assert browsing.errors == []


@pytest.mark.slow
def test_the_runs_table_of_1000_runs_filters_sorts_and_hides_columns(
    browsing: Browsing, backend: Backend
) -> None:
    """1,000 runs in one project: all rendered; value filters, sorting and the column chooser."""
    with httpx.Client(base_url=backend.url, headers=backend.headers) as client:
        for i in range(1000):
            registration = {
                "recording_id": f"big-{i:04d}", "name": f"sweep-{i}", "project_id": "big",
                "hyper_parameters": {"lr": i / 1000, "layers": i % 4,
                                     "opt": {"name": ["adam", "sgd"][i % 2]}},
            }  # fmt: skip
            assert client.post("/api/v1/recordings", json=registration).status_code == 201
    browsing.sign_in("/projects/big")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='1000']")
    assert page.locator("#runs-table tbody tr").count() == 1000
    page.fill("#runs-filter", "lr>0.9 opt.name=sgd")
    expected = sorted(f"sweep-{i}" for i in range(1000) if i / 1000 > 0.9 and i % 2)
    page.wait_for_selector(f"html[data-runs-ready='{len(expected)}']")
    page.click("#runs-table th[data-col='params.lr']")
    names = page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts()
    assert names == sorted(expected, key=lambda n: int(n.split("-")[1]))
    page.click("#runs-table th[data-col='params.lr']")
    assert page.locator("#runs-table tbody td:nth-child(2)").first.inner_text() == "sweep-999"
    before = page.locator("#runs-table th.sortable").count()
    page.click("details.columns summary")
    page.uncheck("#runs-columns input[data-col='params.layers']")
    assert page.locator("#runs-table th.sortable").count() == before - 1
    assert page.locator("#runs-table th[data-col='params.layers']").count() == 0
    assert browsing.errors == []


@pytest.mark.slow
def test_recording_page_draws_one_chart_per_metric(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """A run of thousands of points: identity, escaped notes, one uPlot chart per key, NaN noted."""
    rid = new_id()
    points = [("loss", i, 1 / (i + 1), T0 + i) for i in range(5000)]
    points += [("acc", i, math.sin(i / 50), T0 + i) for i in range(3000)]
    points.append(("acc", 3000, math.nan, T0 + 3000))
    post_points(backend, rid, points, **{
        "markov.recording.name": "demo-run", "markov.project.id": "vision",
        "markov.notes": "<b>bold</b> notes", "markov.hparam.lr": 0.01,
        "markov.hparam.opt.name": "adam",
    })  # fmt: skip
    browsing.sign_in(f"/recordings/{rid}")
    page = browsing.page
    page.wait_for_selector("html[data-charts-ready='2']")
    keys = page.locator("figure.chart").evaluate_all("fs => fs.map(f => f.dataset.key)")
    assert keys == ["acc", "loss"]
    assert page.locator("figure.chart canvas").count() == 2
    assert page.inner_text("h1") == "demo-run"
    assert page.inner_text(".notes") == "<b>bold</b> notes"
    assert page.locator("table.values th", has_text="opt.name").count() == 1
    assert page.is_visible("figure.chart[data-key='acc'] .marks-note")
    assert not page.is_visible("figure.chart[data-key='loss'] .marks-note")
    shown = int(page.inner_text("figure.chart[data-key='loss'] figcaption small").split()[0])
    assert 100 < shown <= 1000
    page.screenshot(path=str(screenshots / "run.png"), full_page=True)

    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "min_step=" in r.url else None)
    plot = page.locator("figure.chart[data-key='loss'] .u-over")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    page.mouse.up()
    caption = "figure.chart[data-key='loss'] figcaption small"
    page.wait_for_function(
        f'() => document.querySelector("{caption}").textContent.includes("zoomed")'
    )
    # The charts share a cursor, so a zoom on one reads the same step range for every key.
    assert sorted(u.split("key=")[1].split("&")[0] for u in asked) == ["acc", "loss"]
    zoomed = int(page.inner_text(caption).split()[0])
    lo, hi = browsing.js(
        "[MarkovCharts.charts.loss.u.scales.x.min, MarkovCharts.charts.loss.u.scales.x.max]"
    )
    assert zoomed >= int(hi) - int(lo) - 1  # the range at full resolution: one point per step
    plot.dblclick()
    page.wait_for_function(
        f'() => !document.querySelector("{caption}").textContent.includes("zoomed")'
    )
    page.select_option("#x-axis", "wall")
    assert browsing.js("MarkovCharts.charts.loss.u.scales.x.time") is True
    assert browsing.errors == []


def test_page_errors_are_seen_by_the_harness(chromium: Any, backend: Backend) -> None:
    """Control: a page that throws shows up in the errors the page tests check."""
    session = Browsing(chromium, backend)
    try:
        session.page.goto("data:text/html,<script>throw new Error('boom')</script>")
        assert any("boom" in e for e in session.errors)
    finally:
        session.context.close()


def test_csp_violations_are_seen_by_the_harness(chromium: Any, backend: Backend) -> None:
    """Control: an inline script on a page under the backend's CSP shows up in the errors."""
    session = Browsing(chromium, backend)
    try:
        session.page.goto(backend.url + "/login")
        with session.page.expect_console_message(lambda m: "Content Security Policy" in m.text):
            session.page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.ran = 1'; document.body.appendChild(s); }"
            )
        assert any("Content Security Policy" in e for e in session.errors), session.errors
        assert session.js("window.ran") is None
    finally:
        session.context.close()


def test_a_page_on_another_site_cannot_sign_the_browser_in(chromium: Any, backend: Backend) -> None:
    """Login CSRF in a real browser: a page of evil.example auto-posts a (valid) token to
    /login; the browser's own Sec-Fetch-Site/Origin get it a 403 and no cookie is set."""
    context = chromium.new_context()
    try:
        form = (
            f'<form method="post" action="{backend.url}/login">'
            f'<input name="token" value="{backend.token}"><input name="next" value="/"></form>'
            "<script>document.forms[0].submit()</script>"
        )
        context.route(
            "http://evil.example/**",
            lambda route: route.fulfill(status=200, content_type="text/html", body=form),
        )
        page = context.new_page()
        posted = lambda r: r.url.endswith("/login") and r.request.method == "POST"  # noqa: E731
        with page.expect_response(posted) as answer:
            page.goto("http://evil.example/")
        assert answer.value.status == 403
        sent = answer.value.request.all_headers()
        assert sent.get("sec-fetch-site") == "cross-site" or "evil.example" in sent["origin"]
        assert [c["name"] for c in context.cookies()] == []
    finally:
        context.close()


@pytest.mark.slow
def test_compare_shows_a_scoped_token_only_its_projects_runs(tmp_path: Path) -> None:
    """/compare with a project token: another project's run is 'not found', like a missing one."""
    backend = Backend(tmp_path / "scoped", extra_args=["--token", "team-a:A"])
    try:
        mine, theirs = new_id(), new_id()
        post_points(
            backend,
            mine,
            [("loss", 0, 1.0, T0)],
            **{"markov.project.id": "A", "markov.recording.name": "mine"},
        )
        post_points(
            backend,
            theirs,
            [("loss", 0, 1.0, T0)],
            **{"markov.project.id": "B", "markov.recording.name": "theirs"},
        )
        scoped = {"Authorization": "Bearer team-a"}
        both = httpx.get(f"{backend.url}/compare?ids={mine},{theirs}", headers=scoped)
        assert both.status_code == 200
        assert f"Not found: {theirs}" in both.text and '"theirs"' not in both.text
        assert '"mine"' in both.text
        alone = httpx.get(f"{backend.url}/compare?ids={theirs}", headers=scoped)
        assert alone.status_code == 404 and "theirs" not in alone.text.replace(theirs, "")
    finally:
        backend.stop()


@pytest.mark.slow
def test_an_optuna_studys_trials_are_one_group_in_the_runs_table_and_compare(
    browsing: Browsing, backend: Backend
) -> None:
    """Three trials of study `quad` and one other run, online: the runs table has an
    optuna_study column, filtering on it shows the three trials, and comparing them shows the
    metadata group with the study and each trial's number."""
    optuna = pytest.importorskip("optuna")
    from markov_otel import RecordingMode
    from markov_otel.integrations.optuna import MarkovOptunaCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"endpoint": backend.url, "api_key": backend.token, "project_id": "hpo"}
    markov = MarkovOptunaCallback(recording_mode=RecordingMode.ONLINE, **options)
    study = optuna.create_study(study_name="quad")
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 2) ** 2, 3, callbacks=[markov])
    with online_recorder(backend.url, backend.token, name="other", project_id="hpo") as other:
        other.add_record({"loss": 1.0})
    browsing.sign_in("/projects/hpo")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='4']")
    page.fill("#runs-filter", "optuna_study=quad")
    page.wait_for_selector("html[data-runs-ready='3']")
    names = sorted(page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts())
    assert names == ["quad/trial-0", "quad/trial-1", "quad/trial-2"]
    rows = httpx.get(f"{backend.url}/api/v1/recordings", headers=backend.headers).json()
    trial_ids = [r["recording_id"] for r in rows if r["metadata"].get("optuna_study") == "quad"]
    page.goto(f"{backend.url}/compare?ids={','.join(trial_ids)}")
    page.wait_for_selector("#params-table tr[data-name='optuna_trial']")
    assert (
        page.locator("#params-table tr[data-name='optuna_study'] td").all_inner_texts()
        == ["quad"] * 3
    )
    assert browsing.errors == []
