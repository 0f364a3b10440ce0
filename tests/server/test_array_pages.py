"""Recorded arrays and images on the pages, in headless Chromium (issues 22 and 23): the compare
page's quantile overlay across runs, the run page's image slider, and one image key across runs
side by side. Runs are recorded by real online recorders into the backend subprocess."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import requests
from backend_fixture import Backend, online_recorder
from browsing import Browsing
from test_quantiles import bucket_of

from markov_otel import Image


def weights(run: int, step: int) -> Any:
    """A run's array at a step: normal around `run - 1`, widening, a tenth exact zeros."""
    values = np.random.default_rng(100 * run + step).normal(run - 1.0, 1.0 + step / 4, 3000)
    values[::10] = 0.0
    return values


def pixels(run: int, step: int) -> Any:
    """A 32x24 RGB image that says which run and step it is (a gradient, to be seen)."""
    y, x = np.mgrid[0:24, 0:32]
    return np.stack([run * 90 + x * 2, step * 4 + y * 3, 255 - x * 6], axis=-1).astype(np.uint8)


def record(
    backend: Backend, name: str, run: int, steps: range, images: dict[str, list[int]]
) -> str:
    """A real online run: `w` at each step, and images of each key at its steps."""
    with online_recorder(backend.url, backend.token, name, project_id="arrays") as recorder:
        for step in steps:
            record: dict[str, Any] = {"w": weights(run, step), "loss": 1.0 / (step + 1)}
            for key, at in images.items():
                if step in at:
                    record[key] = Image(pixels(run, step), caption=f"{name} at {step}")
            recorder.add_record(record, step=step)
    return str(recorder.recording_id)


def stored_pixels(backend: Backend, src: str) -> Any:
    from test_images import decode_png

    answer = requests.get(backend.url + src, headers=backend.headers, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    return decode_png(answer.content)


def test_compare_overlays_each_runs_quantiles_of_a_distribution(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Three runs' `w` over 6 steps: one group per run in its legend colour (median line, two
    bands), each step's p5/p25/median/p75/p95 numpy's quantiles of the recorded array within
    the bucket resolution; hovering reads the last step's median out in the page's legend."""
    ids = [record(backend, f"run-{n}", n, range(6), {}) for n in range(3)]
    page = browsing.page
    browsing.sign_in("/compare?ids=" + "%2C".join(ids))
    page.wait_for_function("() => document.getElementById('quantiles').dataset.ready === 'w'")
    groups = page.evaluate(
        """() => [...document.querySelectorAll('#quantiles g.q-run')].map(g => ({
        run: g.dataset.run, steps: JSON.parse(g.dataset.steps), q: JSON.parse(g.dataset.quantiles),
        paths: [...g.querySelectorAll('path')].map(p => p.getAttribute('class')),
        stroke: g.querySelector('.q-median').getAttribute('stroke'),
        median: g.querySelector('.q-median').getAttribute('d'),
        swatch: getComputedStyle(document.querySelector(
          `#run-legend li[data-run="${g.dataset.run}"] .swatch`)).backgroundColor}))"""
    )
    assert [g["run"] for g in groups] == ids
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    for n, group in enumerate(groups):
        assert group["paths"] == ["q-outer", "q-inner", "q-median"]
        assert group["steps"] == list(range(6))
        stored = requests.get(
            f"{backend.url}/api/v1/recordings/{ids[n]}/distributions",
            params={"key": "w"}, headers=backend.headers, timeout=30,
        ).json()  # fmt: skip
        for step, shown, point in zip(group["steps"], group["q"], stored, strict=True):
            ordered = np.sort(weights(n, step))
            for q, value in zip(qs, shown, strict=True):
                rank = q * (ordered.size - 1)
                low = bucket_of(float(ordered[math.floor(rank)]), point["scale"])[0]
                high = bucket_of(float(ordered[math.ceil(rank)]), point["scale"])[1]
                assert low - 1e-9 <= value <= high + 1e-9, (
                    n,
                    step,
                    q,
                    value,
                    np.quantile(ordered, q),
                )
            assert shown == sorted(shown)
    rgb = [page.evaluate(f"() => {{ const d = document.createElement('i'); d.style.color = "
                         f"'{g['stroke']}'; document.body.append(d); return getComputedStyle(d)"
                         ".color; }") for g in groups]  # fmt: skip
    assert rgb == [g["swatch"] for g in groups] and len(set(rgb)) == 3
    # each median line is drawn through its medians: one affine y(value) fits every vertex
    pairs = [(q[2], float(xy.split()[1])) for g in groups
             for q, xy in zip(g["q"], g["median"][1:].split(" L"), strict=True)]  # fmt: skip
    (v0, y0), (v1, y1) = min(pairs), max(pairs)
    slope = (y1 - y0) / (v1 - v0)
    assert slope < 0 and all(abs(y0 + slope * (v - v0) - y) < 0.2 for v, y in pairs), pairs
    # the medians differ by run (centres -1, 0, 1) and are drawn in that order
    assert [round(g["q"][-1][2]) for g in groups] == [-1, 0, 1]

    svg = page.locator("#quantiles svg")
    box = svg.bounding_box()
    assert box is not None
    svg.hover(position={"x": box["width"] - 17, "y": box["height"] / 2})
    page.wait_for_function(
        "() => [...document.querySelectorAll('#run-legend .legend-value')]"
        ".every(e => e.textContent.startsWith('step 5: median'))"
    )
    readout = page.locator("#run-legend .legend-value").all_inner_texts()
    for n, text in enumerate(readout):
        median = groups[n]["q"][-1][2]
        assert text.split("median ")[1].split(" ")[0] == f"{float(f'{median:.4g}'):g}", text
    page.screenshot(path=str(screenshots / "compare-distributions.png"), full_page=True)
    assert browsing.errors == []


def shown_images(page: Any, viewer: str) -> list[dict[str, Any]]:
    """Each column of a viewer: its run label, the image's step, src and caption."""
    return list(
        page.evaluate(
            f"""() => [...document.querySelectorAll('{viewer} figure.image-at-step')].map(f => {{
            const img = f.querySelector('img'), missing = f.querySelector('.image-missing');
            const seen = e => e.getClientRects().length > 0;
            return {{run: f.dataset.run,
              label: (f.querySelector('.image-run') || {{}}).textContent || '',
              step: seen(img) ? Number(img.dataset.step) : null,
              src: seen(img) ? img.getAttribute('src') : null,
              caption: f.querySelector('.image-caption').textContent,
              missing: seen(missing) ? missing.textContent : ''}}; }})"""
        )
    )


def slide_to(page: Any, slider: str, value: int) -> None:
    """Set the range input as a drag would: its value, then an input event."""
    page.locator(slider).evaluate(
        "(e, v) => { e.value = String(v); e.dispatchEvent(new Event('input')); }", value
    )


def test_run_page_image_slider_shows_the_image_at_or_below_the_chosen_step(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Images at steps 0, 10, 20, 35 (slider stride 5): it starts at the last; 25 shows step
    20's image (its PNG the recorded pixels) and caption; arrow keys move between recorded
    steps, Home and End to the ends; a click on a thumbnail moves the slider there."""
    rid = record(backend, "imgs", 0, range(36), {"samples": [0, 10, 20, 35]})
    page = browsing.page
    browsing.sign_in(f"/recordings/{rid}")
    viewer = '.image-viewer[data-key="samples"]'
    page.wait_for_function(
        "() => document.querySelector('.image-viewer[data-key=\"samples\"]')?.dataset.step === '35'"
    )
    slider = viewer + " input[type=range]"
    assert page.locator(slider).evaluate("e => [e.min, e.max, e.step, e.value]") == [
        "0", "35", "5", "35"
    ]  # fmt: skip
    page.wait_for_function("() => document.querySelector('.image-at-step img').naturalWidth === 32")
    [shown] = shown_images(page, viewer)
    assert (shown["step"], shown["caption"]) == (35, "step 35 · imgs at 35")
    assert shown["src"] == f"/api/v1/recordings/{rid}/artifacts/samples/35.png"

    slide_to(page, slider, 25)
    [shown] = shown_images(page, viewer)
    assert (shown["step"], shown["caption"], shown["missing"]) == (20, "step 20 · imgs at 20", "")
    assert page.locator(viewer + " output").inner_text() == "step 25"
    assert (stored_pixels(backend, shown["src"]) == pixels(0, 20)).all()
    current = page.locator('.image-strip[data-key="samples"] figure.current').get_attribute(
        "data-step"
    )
    assert current == "20"

    page.locator(slider).focus()
    steps = []
    keys = ("ArrowLeft", "ArrowLeft", "ArrowLeft", "ArrowLeft", "End", "ArrowDown", "Home")
    for key in (*keys, "ArrowRight"):
        page.keyboard.press(key)
        steps.append(shown_images(page, viewer)[0]["step"])
    assert steps == [20, 10, 0, 0, 35, 20, 0, 10]

    page.locator('.image-strip[data-key="samples"] figure[data-step="35"] img').click()
    assert page.locator(slider).input_value() == "35"
    assert shown_images(page, viewer)[0]["step"] == 35
    slide_to(page, slider, 20)
    page.locator("#images").screenshot(path=str(screenshots / "run-images.png"))
    assert browsing.errors == []


def test_compare_shows_one_image_key_across_runs_side_by_side(
    browsing: Browsing, backend: Backend, screenshots: Path
) -> None:
    """Three runs with `samples` at different steps and one with `masks` too: a column per run
    labelled with its name; at step 10 each column is that run's image at its step at or
    below 10 (the recorded pixels); the picker switches to `masks`, where the others say so."""
    at = {0: [0, 10, 20], 1: [5, 15], 2: [0, 20]}
    ids = [
        record(
            backend,
            f"run-{n}",
            n,
            range(21),
            {"samples": at[n], **({"masks": [2]} if n == 1 else {})},
        )
        for n in range(3)
    ]
    page = browsing.page
    browsing.sign_in("/compare?ids=" + "%2C".join(ids))
    page.wait_for_function("() => document.getElementById('image-compare')?.dataset.step === '2'")
    options = page.locator("#image-key option").all_inner_texts()
    assert options == ["masks", "samples"] and page.locator("#image-key").input_value() == "masks"
    page.select_option("#image-key", "samples")
    page.wait_for_function("() => document.querySelector('#image-compare input').max === '20'")
    assert page.locator("#image-compare figure").count() == 3
    slider = "#image-compare input[type=range]"
    assert page.locator(slider).evaluate("e => [e.min, e.max, e.step]") == ["0", "20", "5"]
    slide_to(page, slider, 10)
    assert page.locator("#image-compare output").inner_text() == "step 10"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#image-compare img')]"
        ".every(i => i.naturalWidth === 32)"
    )
    shown = shown_images(page, "#image-compare")
    assert [(s["run"], s["label"], s["step"]) for s in shown] == [
        (ids[0], "run-0", 10), (ids[1], "run-1", 5), (ids[2], "run-2", 0)
    ]  # fmt: skip
    for n, column in enumerate(shown):
        assert (
            column["src"] == f"/api/v1/recordings/{ids[n]}/artifacts/samples/{column['step']}.png"
        )
        assert column["caption"] == f"step {column['step']} · run-{n} at {column['step']}"
        assert (stored_pixels(backend, column["src"]) == pixels(n, column["step"])).all()
        assert column["missing"] == ""
    page.screenshot(path=str(screenshots / "compare-images.png"), full_page=True)

    page.select_option("#image-key", "masks")
    page.wait_for_function("() => document.querySelector('#image-compare input').max === '2'")
    shown = shown_images(page, "#image-compare")
    assert [s["step"] for s in shown] == [None, 2, None]
    assert shown[0]["missing"] == "no image at or before step 2"
    assert json.loads(json.dumps(browsing.errors)) == []
