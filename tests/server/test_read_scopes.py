"""The read routes this round added (distributions, texts, history, quantiles, artifacts' list)
answer a project-scoped token only for its own project: another tenant's recording is a 404, as
every other read answers it, and the admin (unscoped) token reads everything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend, online_recorder

TOKENS = ["--token", "team-a:projA", "--token", "team-b:projB"]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    server = Backend(tmp_path / "srv", token="admin", extra_args=TOKENS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def recording_of_a(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A projA recording with an array and a text at steps 0-2, delivered whole."""
    monkeypatch.setenv("MARKOV_DIR", str(tmp_path / "runs"))
    recorder = online_recorder(backend.url, "team-a", project_id="projA")
    with recorder:
        for step in range(3):
            recorder.add_record({"loss": 1.0 / (step + 1), "w": [0.5, 1.5, float(step)],
                                 "sample": f"text {step}"})  # fmt: skip
    return str(recorder.recording_id)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/recordings/{rid}/distributions?key=w",
        "/api/v1/recordings/{rid}/texts?key=sample",
        "/api/v1/history?ids={rid}&key=loss",
        "/api/v1/quantiles?ids={rid}&key=w",
        "/api/v1/recordings/{rid}/artifacts",
    ],
)
@pytest.mark.slow
def test_another_projects_token_reads_none_of_a_recordings_arrays_texts_history_or_files(
    backend: Backend, recording_of_a: str, path: str
) -> None:
    """team-b gets 404 where team-a and the admin get 200 with the recording's data."""
    url = backend.url + path.format(rid=recording_of_a)
    answers = {
        token: httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for token in ("team-a", "admin", "team-b")
    }
    assert answers["team-a"].status_code == 200, answers["team-a"].text
    assert answers["admin"].status_code == 200
    assert answers["team-a"].content == answers["admin"].content
    assert answers["team-b"].status_code == 404, answers["team-b"].text
    nobody = "0" * 32  # a recording that does not exist: team-b must learn no more than that
    unknown = httpx.get(backend.url + path.format(rid=nobody),
                        headers={"Authorization": "Bearer team-b"}, timeout=30)  # fmt: skip
    assert unknown.status_code == 404
    assert answers["team-b"].text.replace(recording_of_a, nobody) == unknown.text
    if "distributions" in path or "texts" in path:
        assert [d["step"] for d in answers["team-a"].json()] == [0, 1, 2]
    if "quantiles" in path:
        assert answers["team-a"].json()["series"][0]["steps"] == [0, 1, 2]
