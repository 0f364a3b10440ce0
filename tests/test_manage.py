"""Run management after the fact (issue 24, goal 2): tags, notes, name, archive and delete, by
API (PATCH, DELETE) and CLI (`mkv tag`, `mkv note`, `mkv archive`, `mkv rm`), with id prefixes
resolved on the backend and scoped tokens confined to their own project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend, online_recorder

from markov_otel.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def recorded(backend: Backend, name: str, project: str) -> str:
    recorder = online_recorder(backend.url, backend.token, name, project_id=project)
    with recorder:
        for step in range(20):
            recorder.add_record({"loss": 1 / (step + 1)}, step=step)
    return str(recorder.recording_id)


@pytest.fixture
def scoped(tmp_path: Path) -> Any:
    """A backend with an all-projects token and one scoped to project `vision`."""
    server = Backend(tmp_path / "scoped", token="all-token", extra_args=["--token", "vis:vision"])
    try:
        yield server
    finally:
        server.stop()


def test_tag_note_archive_and_rm_from_the_cli(
    scoped: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """By prefix against the backend: tags added then one removed, notes set, archived and
    back, then deleted: GET, records and series all 404 and the other run is untouched."""
    keep, gone = recorded(scoped, "keep", "vision"), recorded(scoped, "gone", "vision")
    monkeypatch.setenv("MARKOV_API_KEY", scoped.token)
    monkeypatch.setenv("MARKOV_ENDPOINT", scoped.url)
    client = httpx.Client(base_url=scoped.url, headers=scoped.headers)
    prefix = gone[:10]
    assert run(["tag", prefix, "baseline", "v2", "lr-sweep"], capsys)[1].strip() == (
        f"{gone} tags: baseline v2 lr-sweep"
    )
    assert run(["tag", prefix, "v2", "--remove"], capsys)[0] == 0
    assert run(["note", prefix, "diverged after step 12"], capsys)[0] == 0
    assert run(["archive", prefix], capsys)[0] == 0
    doc = client.get(f"/api/v1/recordings/{gone}").json()
    assert (doc["tags"], doc["notes"], doc["archived"]) == (
        ["baseline", "lr-sweep"], "diverged after step 12", True
    )  # fmt: skip
    listed = {r["recording_id"]: r["archived"] for r in client.get("/api/v1/recordings").json()}
    assert listed == {keep: False, gone: True}
    assert run(["archive", prefix, "--undo"], capsys)[0] == 0
    assert client.get(f"/api/v1/recordings/{gone}").json()["archived"] is False
    renamed = client.patch(f"/api/v1/recordings/{gone}", json={"name": "gone-for-good"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "gone-for-good"

    code, out, _ = run(["rm", prefix, "--yes"], capsys)
    assert code == 0 and out.strip() == f"deleted {gone} on {scoped.url}"
    assert client.get(f"/api/v1/recordings/{gone}").status_code == 404
    assert client.get(f"/api/v1/recordings/{gone}/records?key=loss").status_code == 404
    assert client.get(f"/api/v1/series?ids={gone}&key=loss").status_code == 404
    assert [r["recording_id"] for r in client.get("/api/v1/recordings").json()] == [keep]
    assert len(client.get(f"/api/v1/recordings/{keep}/records?key=loss").json()) == 20
    assert run(["rm", prefix, "--yes"], capsys)[0] == 1  # nothing left to name
    client.close()


def test_a_scoped_token_changes_and_deletes_only_its_own_project(scoped: Backend) -> None:
    """The `vision` token tags, archives and deletes a vision run; a run of project `text` is
    a 404 to it for PATCH and DELETE, and stays as it was."""
    mine, theirs = recorded(scoped, "mine", "vision"), recorded(scoped, "theirs", "text")
    as_vision = httpx.Client(base_url=scoped.url, headers={"Authorization": "Bearer vis"})
    as_all = httpx.Client(base_url=scoped.url, headers=scoped.headers)
    for body in ({"tags": ["x"]}, {"archived": True}, {"name": "stolen"}):
        assert as_vision.patch(f"/api/v1/recordings/{theirs}", json=body).status_code == 404
    assert as_vision.delete(f"/api/v1/recordings/{theirs}").status_code == 404
    doc = as_all.get(f"/api/v1/recordings/{theirs}").json()
    assert (doc["name"], doc["tags"], doc["archived"]) == ("theirs", [], False)
    assert as_vision.patch(f"/api/v1/recordings/{mine}", json={"tags": ["ok"]}).json()["tags"] == [
        "ok"
    ]
    assert as_vision.delete(f"/api/v1/recordings/{mine}").status_code == 204
    assert as_all.get(f"/api/v1/recordings/{mine}").status_code == 404
    assert as_all.get(f"/api/v1/recordings/{theirs}").status_code == 200
    bad = as_all.patch(f"/api/v1/recordings/{theirs}", json={"tags": "not-a-list"})
    assert bad.status_code == 400 and "tags must be a list" in bad.text
    bad = as_all.patch(f"/api/v1/recordings/{theirs}", json={"archived": "yes"})
    assert bad.status_code == 400 and "archived must be true or false" in bad.text
    as_vision.close()
    as_all.close()
