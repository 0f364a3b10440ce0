"""The experiment pages in headless Chromium: charts drawn from the stored series, no JS errors."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def open_in_chromium(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the page's console messages (from Chromium's log)."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=5000", "--dump-dom", url,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_console_errors_are_seen_by_the_harness(tmp_path: Path) -> None:
    """Control: a page that throws shows up in the console lines the page tests check."""
    _, console = open_in_chromium(
        "data:text/html,<script>throw new Error('boom')</script>", tmp_path
    )
    assert any("boom" in line for line in console)


def test_recording_page_draws_one_chart_per_metric(backend: Backend, tmp_path: Path) -> None:
    """The page of a run with thousands of points shows its identity and one drawn chart per key."""
    rid = new_id()
    points = series("loss", 5000) + [("acc", i, math.sin(i / 50), i) for i in range(3000)]
    points.append(("acc", 3000, math.nan, 3000))
    resource = {
        "markov.recording.name": "demo-run",
        "markov.project.id": "vision",
        "markov.notes": "<b>bold</b> notes",
        "markov.hparam.lr": 0.01,
    }
    body = metrics_json_bytes(rid, points, **resource)
    headers = {**backend.headers, "Content-Type": "application/json"}
    assert httpx.post(backend.url + "/v1/metrics", content=body, headers=headers).status_code == 200
    url = httpx.get(f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers).json()[
        "experiment_url"
    ]
    dom, console = open_in_chromium(f"{url}?token={backend.token}", tmp_path)
    assert console == []
    assert 'data-charts-ready="2"' in dom and "data-js-error" not in dom
    assert re.findall(r'<figure class="chart" data-key="([^"]+)"', dom) == ["acc", "loss"]
    polylines = re.findall(r'<polyline class="series" points="([^"]+)"', dom)
    assert len(polylines) == 2 and all(len(p.split()) > 500 for p in polylines)
    assert "demo-run" in dom and "&lt;b&gt;bold&lt;/b&gt; notes" in dom
    assert "1 non-finite not drawn" in dom and ">lr<" in dom


def test_list_page_groups_recordings_by_project(backend: Backend, tmp_path: Path) -> None:
    """`/` lists recordings under their project with links to their pages."""
    rid = new_id()
    registration = {"recording_id": rid, "name": "listed-run", "project_id": "nlp"}
    httpx.post(backend.url + "/api/v1/recordings", json=registration, headers=backend.headers)
    dom, console = open_in_chromium(f"{backend.url}/?token={backend.token}", tmp_path)
    assert console == []
    assert f'href="/recordings/{rid}"' in dom and 'href="/projects/nlp"' in dom
    assert "listed-run" in dom
