"""The artifact index in the database: concurrent naming across server processes, and an older
backend's JSON index files read in once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from backend_fixture import Backend
from otlp_bodies import new_id


@pytest.fixture
def two_workers(tmp_path: Path, own_schema: str) -> Iterator[Backend]:
    """`mkv serve --workers 2` over a schema of its own in the test PostgreSQL."""
    server = Backend(tmp_path / "workers", db=own_schema, extra_args=["--workers", "2"])
    try:
        yield server
    finally:
        server.stop()


def register(server: Backend, rid: str, model_id: str = "") -> None:
    body = {"recording_id": rid, "name": "files", "project_id": "p", "model_id": model_id}
    url = f"{server.url}/api/v1/recordings"
    requests.post(url, json=body, headers=server.headers, timeout=30).raise_for_status()


def upload(server: Backend, data: bytes) -> str:
    """Bytes uploaded in one part and committed; their digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = f"{server.url}/api/v1/blobs/{digest}"
    part = requests.put(f"{blob}/parts/0", data=data, headers=server.headers, timeout=30)
    part.raise_for_status()
    commit = {"size": len(data), "parts": 1}
    requests.post(blob, json=commit, headers=server.headers, timeout=30).raise_for_status()
    return digest


def name(server: Backend, rid: str, artifact: str, digest: str, kind: str = "file") -> int:
    url = f"{server.url}/api/v1/recordings/{rid}/artifacts/{artifact}"
    body = {"digest": digest, "kind": kind, "metadata": {"n": artifact}}
    return requests.put(url, json=body, headers=server.headers, timeout=60).status_code


def listed(server: Backend, rid: str) -> list[dict[str, object]]:
    url = f"{server.url}/api/v1/recordings/{rid}/artifacts"
    answer = requests.get(url, headers=server.headers, timeout=30)
    answer.raise_for_status()
    return list(answer.json())


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_naming_artifacts_at_once_list_each_exactly_once(
    two_workers: Backend,
) -> None:
    """Two server processes name 240 artifacts at once (120 in one recording, 40 in each of
    three others, every name twice with different bytes): each recording lists every one of
    its names exactly once, with bytes of one of the two namings, and the model is found."""
    server = two_workers
    workers = psutil.Process(server.process.pid).children()  # type: ignore[union-attr]
    assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
    rids = [new_id() for _ in range(4)]
    for rid in rids:
        register(server, rid, model_id=f"model-{rid}")
    digests = [upload(server, b"a" * 100), upload(server, b"b" * 200)]
    wanted = {rids[0]: 120, rids[1]: 40, rids[2]: 40, rids[3]: 40}
    namings = [
        (rid, f"f{n:03d}.bin", digest)
        for digest in digests
        for rid, count in wanted.items()
        for n in range(count)
    ]
    namings.append((rids[1], "model.pt", digests[0]))
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda args: name(server, *args), namings[:-1]))
        codes.append(name(server, *namings[-1], kind="model"))
    assert set(codes) == {200}
    for rid, count in wanted.items():
        found = listed(server, rid)
        names = [a["name"] for a in found]
        expected = [f"f{n:03d}.bin" for n in range(count)] + (["model.pt"] * (rid == rids[1]))
        assert sorted(names) == expected  # each exactly once
        assert {(a["digest"], a["size"]) for a in found} <= {(digests[0], 100), (digests[1], 200)}
    model = requests.get(
        f"{server.url}/api/v1/models/model-{rids[1]}", headers=server.headers, timeout=30
    ).json()
    assert (model["recording_id"], model["artifact"]["name"]) == (rids[1], "model.pt")


def test_an_older_backends_json_index_is_read_into_the_database_once(tmp_path: Path) -> None:
    """A server directory whose index is JSON files (an older backend's) lists its artifacts
    and finds its model after an upgrade; the files are read once and gone, and a later
    restart lists each artifact still exactly once; naming one again replaces it,
    and deleting the recording forgets them."""
    server = Backend(tmp_path / "old")
    try:
        rid = new_id()
        register(server, rid, model_id="m1")
        digest = upload(server, b"weights" * 10)
        server.kill()
        root = server.workdir / "backend.db.artifacts"
        entry = {"name": "model.pt", "kind": "model", "digest": digest, "size": 70, "step": 9,
                 "media_type": "application/octet-stream", "metadata": {"epoch": 3}}  # fmt: skip
        other = {**entry, "name": "notes.txt", "kind": "file", "metadata": {}}
        other.pop("step")
        (root / "recordings").mkdir()
        (root / "models").mkdir()
        index = {"artifacts": [entry, other, {"name": "torn.bin"}]}  # the last one: skipped
        (root / "recordings" / f"{rid}.json").write_text(json.dumps(index))
        model = {"model_id": "m1", "recording_id": rid, "project_id": "p", "artifact": entry}
        (root / "models" / "m1.json").write_text(json.dumps(model))
        for _ in range(2):
            server.restart()
            assert listed(server, rid) == [entry, other]
            assert not list(root.glob("*/*.json"))
            found = requests.get(f"{server.url}/api/v1/models/m1", headers=server.headers)
            assert found.json()["artifact"] == entry
            download = requests.get(
                f"{server.url}/api/v1/recordings/{rid}/artifacts/model.pt", headers=server.headers
            )
            assert download.content == b"weights" * 10
            server.kill()
        server.start()
        newer = upload(server, b"notes, rewritten")
        assert name(server, rid, "notes.txt", newer) == 200  # naming again replaces, in place
        assert [(a["name"], a["digest"]) for a in listed(server, rid)] == [
            ("model.pt", digest), ("notes.txt", newer),
        ]  # fmt: skip
        one = f"{server.url}/api/v1/recordings/{rid}"
        assert requests.delete(one, headers=server.headers, timeout=30).status_code == 204
        register(server, rid)
        assert listed(server, rid) == []  # deleting a run forgets its names (the bytes stay)
    finally:
        server.stop()
