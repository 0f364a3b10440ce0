"""The panels of the chart pages and the runs filter, in headless Chromium (issue 24): sections
by prefix with system metrics collapsed, one legend per page with highlight, panel search, hide
and pin, readable ticks, the view kept in the URL, and a filter that names an unknown column."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from browsing import Browsing
from otlp_bodies import new_id
from test_page import post_points

T0 = 1_700_000_000_000_000_000
KEYS = ["loss", "train/acc", "train/loss", "val/loss", "lr",
        "system.memory.usage/state.used", "system.cpu.utilization/state.user"]  # fmt: skip


def sweep(backend: Backend, runs: int = 3) -> list[str]:
    """`runs` runs of 200 steps of KEYS: lr from 1e-3 to 1e-6, memory ~6 GB, CPU ~40 %."""
    ids = []
    for n in range(runs):
        rid = new_id()
        points = []
        for step in range(200):
            values = {
                "loss": 2 * math.exp(-step / 50) + n / 10, "train/acc": 1 - math.exp(-step / 40),
                "train/loss": math.exp(-step / 60), "val/loss": math.exp(-step / 70) + 0.1,
                "lr": 1e-3 * 1e-3 ** (step / 199) / (n + 1),
                "system.memory.usage/state.used": 6.2e9 + 1e8 * math.sin(step / 20 + n),
                "system.cpu.utilization/state.user": 0.4 + 0.05 * math.sin(step / 10),
            }  # fmt: skip
            points += [(key, step, value, T0 + step * 1000 + i) for i, (key, value) in
                       enumerate(values.items())]  # fmt: skip
        post_points(backend, rid, points, **{"markov.recording.name": f"run-{n}",
                                             "markov.hparam.lr": 1e-3 / (n + 1)})  # fmt: skip
        ids.append(rid)
    return ids


def sections(page: Any) -> list[tuple[str, bool, list[str]]]:
    """(section name, open, keys of its visible panels) in page order."""
    return page.evaluate(
        """[...document.querySelectorAll('details.panel-section')].filter(d => !d.hidden).map(d =>
        [d.dataset.section, d.open, [...d.querySelectorAll('figure.chart')].filter(f => !f.hidden)
        .map(f => f.dataset.key)])"""
    )


@pytest.mark.slow
def test_compare_groups_panels_with_one_legend_and_keeps_the_view_in_the_url(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Sections Charts, train, val, System (collapsed); no per-chart legend, the page legend
    reads out the hovered chart and highlights a run; search, hide and pin change the panels
    and the URL, and the URL opened afresh shows the same view (smoothing and log scale too)."""
    ids = sweep(backend)
    browsing.sign_in("/")
    page = browsing.page
    page.goto(backend.url + "/compare?ids=" + ",".join(ids))
    page.wait_for_selector(f"html[data-charts-ready='{len(KEYS)}']")
    assert sections(page) == [
        ["Charts", True, ["loss", "lr"]],
        ["train", True, ["train/acc", "train/loss"]],
        ["val", True, ["val/loss"]],
        ["System", False, ["system.cpu.utilization/state.user", "system.memory.usage/state.used"]],
    ]
    assert not page.is_visible("figure.chart[data-key='loss'] .legend")
    assert page.locator("#run-legend li").count() == 3
    plot = page.locator("figure.chart[data-key='loss'] .u-over")
    box = plot.bounding_box()
    plot.hover(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
    page.wait_for_function(
        "() => [...document.querySelectorAll('#run-legend .legend-value')]"
        ".every(e => e.textContent.includes(' @ step '))"
    )
    assert page.inner_text("#run-legend-key") == "loss"
    page.hover(f"#run-legend li[data-run='{ids[1]}'] a")
    assert page.locator("#run-legend li.focused").count() == 1
    assert page.get_attribute("#run-legend li.focused", "data-run") == ids[1]
    page.screenshot(path=str(screenshots / "compare-sections.png"), full_page=True)

    page.fill("#panel-search", "loss")
    page.wait_for_function("() => new URL(location).searchParams.get('panels') === 'loss'")
    assert [keys for _, _, keys in sections(page)] == [["loss"], ["train/loss"], ["val/loss"]]
    page.fill("#panel-search", "")
    page.wait_for_function("() => !new URL(location).searchParams.has('panels')")
    page.click("figure.chart[data-key='train/acc'] button.hide")
    page.click("figure.chart[data-key='val/loss'] button.pin")
    assert page.inner_text("#panels-unhide") == "show 1 hidden"
    assert sections(page)[0] == ["Pinned", True, ["val/loss"]]
    page.check("#log-scale")
    page.locator("#smoothing").evaluate(
        "e => { e.value = '0.8'; e.dispatchEvent(new Event('input')); }"
    )
    shared = page.url
    assert "hide=train%2Facc" in shared and "pin=val%2Floss" in shared
    assert "log=1" in shared and "smooth=0.8" in shared

    other = browsing.context.new_page()
    other.goto(shared)
    other.wait_for_selector(f"html[data-charts-ready='{len(KEYS)}']")
    assert sections(other) == sections(page)
    assert other.is_checked("#log-scale") and other.input_value("#smoothing") == "0.8"
    assert other.evaluate("MarkovCharts.charts.loss.u.scales.y.distr") == 3
    assert other.inner_text("#panels-unhide") == "show 1 hidden"
    other.click("#panels-unhide")
    assert "hide=" not in other.url
    assert browsing.errors == []


@pytest.mark.slow
def test_ticks_read_without_repeats_with_units_and_scientific_on_log(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """On a log axis lr's ticks are distinct and scientific (no 0); memory in bytes shows GiB;
    CPU utilisation shows %; every chart's ticks are distinct."""
    ids = sweep(backend, runs=2)
    browsing.sign_in("/")
    page = browsing.page
    page.goto(backend.url + "/compare?ids=" + ",".join(ids) + "&log=1&open=System")
    page.wait_for_selector(f"html[data-charts-ready='{len(KEYS)}']")
    ticks = page.evaluate(
        "Object.fromEntries(Object.entries(MarkovCharts.charts)"
        ".map(([k, c]) => [k, c.u.axes[1]._values.filter(v => v !== '' && v !== null)]))"
    )
    for key, labels in ticks.items():
        assert len(labels) >= 2 and len(set(labels)) == len(labels), (key, labels)
    assert all("e-" in t for t in ticks["lr"]) and "0" not in ticks["lr"], ticks["lr"]
    assert all(t.endswith(" GiB") for t in ticks["system.memory.usage/state.used"])
    assert all(t.endswith("%") for t in ticks["system.cpu.utilization/state.user"])
    page.screenshot(path=str(screenshots / "compare-log-units.png"), full_page=True)
    # The same labels from the formatter itself: 0.00025 is not rounded to 0.0003.
    labels = page.evaluate("MarkovPanels.labels([0, 0.00025, 0.0005, 0.00075, 0.001], '', false)")
    assert labels == ["0", "2.5e-4", "5e-4", "7.5e-4", "1e-3"] or labels == [
        "0.00000",
        "0.00025",
        "0.00050",
        "0.00075",
        "0.00100",
    ], labels
    assert browsing.errors == []


def test_an_unknown_column_in_the_filter_says_so(browsing: Browsing, backend: Backend) -> None:
    """`val_acc>0.5` names no column: the page says so and suggests summary.val/acc; the help
    popover shows the syntax; a known column still filters."""
    for n in range(3):
        rid = new_id()
        post_points(backend, rid, [("loss", 0, 1.0, T0)], **{
            "markov.recording.name": f"run-{n}", "markov.hparam.lr": n / 10,
            "markov.summary.val/acc": n / 4,
        })  # fmt: skip
    browsing.sign_in("/")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='3']")
    page.fill("#runs-filter", "val_acc>0.3")
    page.wait_for_selector("#runs-filter-note:not([hidden])")
    note = page.inner_text("#runs-filter-note")
    assert 'no column "val_acc"' in note and "summary.val/acc" in note, note
    page.fill("#runs-filter", "summary.val/acc>0.3")
    page.wait_for_selector("html[data-runs-ready='1']")
    assert page.is_hidden("#runs-filter-note")
    page.click("#filter-help summary")
    assert "lr>0.01" in page.inner_text("#filter-help")
    assert browsing.errors == []


@pytest.mark.slow
def test_the_runs_table_view_is_in_the_url(browsing: Browsing, backend: Backend) -> None:
    """Filter, status, sort and columns go to the URL; the link opened afresh (another browser
    context: no localStorage) shows the same rows in the same order with the same columns."""
    for n in range(5):
        post_points(backend, new_id(), [("loss", 0, 1.0, T0)], **{
            "markov.recording.name": f"run-{n}", "markov.hparam.lr": n / 10,
            "markov.hparam.layers": n % 2,
        })  # fmt: skip
    browsing.sign_in("/")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='5']")
    page.fill("#runs-filter", "lr>0.05")
    page.wait_for_selector("html[data-runs-ready='4']")
    page.click("#runs-table th[data-col='params.lr']")
    page.click("#runs-table th[data-col='params.lr']")
    page.click("details.columns summary")
    page.uncheck("#runs-columns input[data-col='params.layers']")
    shared = page.url
    assert "q=lr%3E0.05" in shared and "sort=params.lr" in shared and "dir=desc" in shared
    rows = page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts()
    heads = page.locator("#runs-table th.sortable").evaluate_all("t => t.map(h => h.dataset.col)")
    assert rows == ["run-4", "run-3", "run-2", "run-1"] and "params.layers" not in heads

    fresh = Browsing(browsing.page.context.browser, backend)
    try:
        fresh.sign_in("/")
        fresh.page.goto(shared)
        fresh.page.wait_for_selector("html[data-runs-ready='4']")
        assert fresh.page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts() == rows
        assert fresh.page.input_value("#runs-filter") == "lr>0.05"
        got = fresh.page.locator("#runs-table th.sortable").evaluate_all(
            "t => t.map(h => h.dataset.col)"
        )
        assert got == heads
    finally:
        fresh.context.close()
    assert browsing.errors == []


@pytest.mark.slow
def test_metric_columns_sort_mark_the_best_and_download_as_csv(
    browsing: Browsing, backend: Backend, screenshots: Path, tmp_path: Path
) -> None:
    """Columns offers last/min/max of every key; min and last of val/loss show the values
    recorded (no summary needed), sort, and the lowest loss is marked best; CSV holds exactly
    the rows and columns shown, a formula-like name neutralised."""
    lows = {"=run-a": 0.5, "run-b": 0.2, "run-c": 0.9}
    for name, low in lows.items():
        points = [("val/loss", s, low + (9 - s) / 10 if s < 10 else low + 0.05, T0 + s)
                  for s in range(12)]  # fmt: skip
        post_points(backend, new_id(), points, **{"markov.recording.name": name})
    browsing.sign_in("/")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='3']")
    page.click("details.columns summary")
    page.check("#runs-columns input[data-col='min.val/loss']")
    page.check("#runs-columns input[data-col='last.val/loss']")
    page.click("details.columns summary")
    cell = "#runs-table tbody td.best"
    page.wait_for_function(f"() => document.querySelectorAll('{cell}').length === 2")
    page.click("#runs-table th[data-col='min.val/loss']")
    names = page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts()
    assert names == ["run-b", "=run-a", "run-c"]
    heads = page.locator("#runs-table th.sortable").evaluate_all("t => t.map(h => h.dataset.col)")
    at = heads.index("min.val/loss") + 2
    mins = page.locator(f"#runs-table tbody td:nth-child({at})").all_inner_texts()
    assert [float(m) for m in mins] == [0.2, 0.5, 0.9]
    best = page.locator(cell).all_inner_texts()
    assert "0.2" in best and "0.25" in best  # min and last of run-b
    page.screenshot(path=str(screenshots / "runs-metric-columns.png"), full_page=True)
    with page.expect_download() as waiting:
        page.click("#runs-csv")
    saved = tmp_path / "runs.csv"
    waiting.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0] == "id," + ",".join(heads) and len(lines) == 4
    assert ",'=run-a," in lines[2], lines[2]
    assert browsing.errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.slow
def test_pages_fit_a_phone_in_light_and_dark(
    chromium: Any, backend: Backend, screenshots: Path, scheme: str
) -> None:
    """At 390 px wide no page scrolls sideways (the comparison, the runs table, one run), and
    the page follows the browser's colour scheme (dark background in dark mode)."""
    ids = sweep(backend, runs=2)
    context = chromium.new_context(viewport={"width": 390, "height": 844}, color_scheme=scheme)
    context.add_cookies([{"name": "markov_token", "value": backend.token, "url": backend.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        for path, ready in (
            ("/compare?ids=" + ",".join(ids), "html[data-charts-ready]"),
            ("/", "html[data-runs-ready]"),
            (f"/recordings/{ids[0]}", "html[data-charts-ready]"),
        ):
            page.goto(backend.url + path)
            page.wait_for_selector(ready)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, (path, wide)
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (background == "rgb(21, 24, 28)") == (scheme == "dark"), background
        page.goto(backend.url + "/compare?ids=" + ",".join(ids))
        page.wait_for_selector("html[data-charts-ready]")
        page.screenshot(path=str(screenshots / f"compare-390-{scheme}.png"), full_page=True)
    finally:
        context.close()
    assert errors == []


@pytest.mark.slow
def test_archived_runs_are_hidden_until_asked_for_and_tags_show(
    browsing: Browsing, backend: Backend
) -> None:
    """Of 3 runs, the archived one is not in the table; the "archived" box shows it alone; a
    run's tags are a column and match the text filter."""
    ids = []
    for n in range(3):
        rid = new_id()
        post_points(backend, rid, [("loss", 0, 1.0, T0)], **{"markov.recording.name": f"r{n}"})
        ids.append(rid)
    with httpx.Client(base_url=backend.url, headers=backend.headers) as client:
        assert client.patch(f"/api/v1/recordings/{ids[0]}", json={"archived": True}).is_success
        assert client.patch(f"/api/v1/recordings/{ids[1]}", json={"tags": ["best"]}).is_success
    browsing.sign_in("/")
    page = browsing.page
    page.wait_for_selector("html[data-runs-ready='2']")
    assert sorted(page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts()) == [
        "r1", "r2"
    ]  # fmt: skip
    page.check("#runs-archived")
    page.wait_for_selector("html[data-runs-ready='1']")
    assert page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts() == ["r0"]
    page.uncheck("#runs-archived")
    page.fill("#runs-filter", "best")
    page.wait_for_selector("html[data-runs-ready='1']")
    assert page.locator("#runs-table tbody td:nth-child(2)").all_inner_texts() == ["r1"]
    assert page.locator("#runs-table th[data-col='tags']").count() == 1
    assert browsing.errors == []


@pytest.mark.slow
def test_parallel_coordinates_colour_by_a_metric_and_brush(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Lines take the colour scale of the chosen value (last loss: lowest dark purple, highest
    yellow); dragging along that axis keeps the runs in the range (2 of 4), fades the others in
    the plot, the legend and the table; a double-click clears the brush."""
    ids = sweep(backend, runs=4)  # last loss rises with the run's index
    browsing.sign_in("/")
    page = browsing.page
    page.goto(backend.url + "/compare?ids=" + ",".join(ids))
    page.wait_for_selector(f"html[data-charts-ready='{len(KEYS)}']")
    page.select_option("#pc-target", "last.loss")
    strokes = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#parcoords path.pc-line')]"
        ".map(p => [p.dataset.run, p.getAttribute('stroke')]))"
    )
    assert strokes[ids[0]] == "rgb(68,1,84)" and strokes[ids[3]] == "rgb(253,231,37)"
    assert len(set(strokes.values())) == 4
    grip = page.locator("#parcoords .pc-grip").last
    box = grip.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(x, box["y"] - 20, steps=5)
    page.mouse.up()
    page.wait_for_selector("html[data-parcoords-kept='2']")
    out = page.evaluate(
        "[...document.querySelectorAll('#parcoords path.pc-out')].map(p => p.dataset.run)"
    )
    assert sorted(out) == sorted(ids[:2])
    assert page.locator("#run-legend li.pc-out").count() == 2
    page.screenshot(path=str(screenshots / "compare-parcoords-brush.png"), full_page=True)
    page.locator("#parcoords .pc-grip").last.dblclick()
    page.wait_for_selector("html[data-parcoords-kept='4']")
    assert browsing.errors == []


@pytest.mark.slow
def test_groups_draw_a_mean_line_in_a_min_max_band_and_expand(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Grouped by `opt` (adam: runs 0 and 2, sgd: 1 and 3), each chart draws 2 lines, each the
    mean of its runs with a band from their min to their max; expanding adam adds its 2 runs;
    the grouping is in the URL and a fresh page shows it again."""
    ids = []
    for n in range(4):
        rid = new_id()
        points = [("loss", s, 2 + n / 10 - s / 100, T0 + s) for s in range(100)]
        opt = ["adam", "sgd"][n % 2]
        resource = {"markov.recording.name": f"run-{n}", "markov.hparam.opt": opt}
        post_points(backend, rid, points, **resource)
        ids.append(rid)
    browsing.sign_in("/")
    page = browsing.page
    page.goto(backend.url + "/compare?ids=" + ",".join(ids))
    page.wait_for_selector("html[data-charts-ready='1']")
    page.select_option("#group-by", "opt")
    u = "MarkovCharts.charts.loss.u"
    page.wait_for_function(f"() => {u}.series.length === 7")
    assert page.evaluate(f"{u}.bands.length") == 2
    first = page.evaluate(f"[1, 2, 3, 4, 5, 6].map(i => {u}.data[i][0])")
    expected = [2.1, 2.2, 2.0, 2.2, 2.3, 2.1]  # adam mean, max, min; sgd mean, max, min
    assert [round(v, 9) for v in first] == expected, first
    assert page.locator("#group-legend li").all_inner_texts() == [
        "opt = adam (2 runs) ▸", "opt = sgd (2 runs) ▸"
    ]  # fmt: skip
    page.click("#group-legend li[data-group='adam'] button")
    page.wait_for_function(f"() => {u}.series.length === 9")
    page.screenshot(path=str(screenshots / "compare-groups.png"), full_page=True)
    assert "group=opt" in page.url and "expand=adam" in page.url
    again = browsing.context.new_page()
    again.goto(page.url)
    again.wait_for_selector("html[data-charts-ready='1']")
    again.wait_for_function(f"() => {u}.series.length === 9")
    assert again.input_value("#group-by") == "opt"
    page.select_option("#group-by", "")
    page.wait_for_function(f"() => {u}.series.length === 9 && {u}.bands.length === 0")
    assert browsing.errors == []
