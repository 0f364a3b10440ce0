"""The read routes this round added (distributions, texts, history, quantiles, artifacts' list)
answer a project-scoped token only for its own project: another tenant's recording is a 404, as
every other read answers it, and the admin (unscoped) token reads everything."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend, online_recorder
from otlp_bodies import metrics_json_bytes, new_id

TOKENS = ["--token", "team-a:projA", "--token", "team-b:projB"]
T0 = 1_700_000_000_000_000_000


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


def test_open_runs_tables_of_two_tenants_polling_at_once_each_see_only_their_own_project(
    backend: Backend,
) -> None:
    """The live runs table shares its reads and answers between open pages (runs_table.py): 40
    polls of team-a and team-b at once, whole and since a cursor, each answer holds its own
    project's runs and metric keys only; the other tenant's ETag never earns a 304, and asking
    for the other project by name is a 403."""
    admin = {"Authorization": "Bearer admin", "Content-Type": "application/json"}
    runs = {"projA": new_id(), "projB": new_id()}
    for project, rid in runs.items():
        body = metrics_json_bytes(rid, [(f"secret_{project}", 0, 1.0, T0)],
                                  **{"markov.project.id": project})  # fmt: skip
        assert httpx.post(backend.url + "/v1/metrics", content=body, headers=admin).is_success
    table = backend.url + "/api/v1/runs-table"
    tenants = {"team-a": "projA", "team-b": "projB"}

    def poll(token: str, since: str | None) -> tuple[str, str | None, httpx.Response]:
        params = {} if since is None else {"since": since}
        headers = {"Authorization": f"Bearer {token}"}
        return token, since, httpx.get(table, params=params, headers=headers, timeout=30)

    asks = [(token, since) for token in tenants for since in (None, "2000-01-01T00:00:00")] * 10
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ask: poll(*ask), asks))
    for token, since, answer in answers:
        assert answer.status_code == 200, answer.text
        doc, own = answer.json(), tenants[token]
        assert [row["id"] for row in doc["runs"]] == [runs[own]], (token, doc)
        assert {row["project"] for row in doc["runs"]} == {own}
        if since is None:  # the whole table: its metric columns too
            assert doc["keys"] == [f"secret_{own}"]
        else:  # a delta: the ids of every run the page may keep
            assert doc["ids"] == [runs[own]]
    tag_of_a = next(a.headers["etag"] for t, _, a in answers if t == "team-a")
    as_b = httpx.get(table, headers={"Authorization": "Bearer team-b", "If-None-Match": tag_of_a},
                     timeout=30)  # fmt: skip
    assert as_b.status_code == 200 and [r["id"] for r in as_b.json()["runs"]] == [runs["projB"]]
    other = httpx.get(table, params={"project_id": "projB"},
                      headers={"Authorization": "Bearer team-a"}, timeout=30)  # fmt: skip
    assert other.status_code == 403 and runs["projB"] not in other.text
    every = httpx.get(table, headers={"Authorization": "Bearer admin"}, timeout=30).json()
    assert sorted(row["id"] for row in every["runs"]) == sorted(runs.values())


@pytest.mark.parametrize("order", ["own first", "theirs first"])
def test_a_history_ask_naming_another_tenants_run_streams_nothing_of_either(
    backend: Backend, order: str
) -> None:
    """read.history's streamed form checks every id before its first byte: team-a asking for
    its own run and team-b's, in either order, gets the plain 404 of an unknown id, and no
    frame (nor the name of a key) of its own run leaks ahead of it."""
    admin = {"Authorization": "Bearer admin", "Content-Type": "application/json"}
    runs = {"projA": new_id(), "projB": new_id()}
    for project, rid in runs.items():
        body = metrics_json_bytes(rid, [(f"loss_{project}", s, 1.0, T0 + s) for s in range(50)],
                                  **{"markov.project.id": project})  # fmt: skip
        assert httpx.post(backend.url + "/v1/metrics", content=body, headers=admin).is_success
    ids = [runs["projA"], runs["projB"]]
    if order == "theirs first":
        ids.reverse()
    headers = {"Authorization": "Bearer team-a", "Accept": "application/x-markov-history"}
    asked = httpx.get(backend.url + "/api/v1/history", params={"ids": ",".join(ids)},
                      headers=headers, timeout=30)  # fmt: skip
    assert asked.status_code == 404, asked.content[:200]
    assert asked.headers["content-type"].startswith("application/json")
    assert runs["projA"].encode() not in asked.content and b"loss_" not in asked.content
    alone = httpx.get(backend.url + "/api/v1/history", params={"ids": runs["projA"]},
                      headers=headers, timeout=30)  # fmt: skip
    assert alone.status_code == 200 and b"loss_projA" in alone.content  # the control
