"""SQL injection: hostile names, keys and project ids are stored and read back as plain data."""

from __future__ import annotations

import httpx
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

HOSTILE = [
    "x'); DROP TABLE points;--",
    "' OR '1'='1",
    'a"; DELETE FROM recordings; --',
    "%_\\ LIKE '%'",
    "λ'); DROP TABLE recordings;-- 損失",
]
JSON = {"Content-Type": "application/json"}


def ingest(server: Backend, recording_id: str, key: str, n: int) -> None:
    body = metrics_json_bytes(recording_id, series(key, n))
    answer = httpx.post(
        server.url + "/v1/metrics", content=body, headers={**server.headers, **JSON}
    )
    assert answer.status_code == 200, answer.text


def test_hostile_strings_are_stored_verbatim_and_the_tables_still_work(server: Backend) -> None:
    """Names, notes, project ids, metadata/hparam keys and record keys read back byte for byte."""
    api = server.url + "/api/v1/recordings"
    tag = new_id()[:8]  # PostgreSQL's database outlives a test run: keep this run's projects apart
    hostile = [text + tag for text in HOSTILE]
    ids = []
    for i, text in enumerate(hostile):
        rid = new_id()
        ids.append(rid)
        body = {
            "recording_id": rid,
            "name": text,
            "project_id": text,
            "notes": text,
            "dataset_id": text,
            "metadata": {text: text},
            "hyper_parameters": {text: i},
        }
        assert httpx.post(api, json=body, headers=server.headers).status_code == 201
        patched = httpx.patch(
            f"{api}/{rid}", json={"summary": {text: 1.5}, "status": text}, headers=server.headers
        )
        assert patched.status_code == 200, patched.text
        ingest(server, rid, text, 3 + i)
    for i, (rid, text) in enumerate(zip(ids, hostile, strict=True)):
        got = httpx.get(f"{api}/{rid}", headers=server.headers).json()
        assert [got[k] for k in ("name", "project_id", "notes", "dataset_id")] == [text] * 4
        assert got["metadata"] == {text: text} and got["hyper_parameters"] == {text: i}
        assert got["summary"] == {text: 1.5} and got["status"] == text
        assert got["keys"] == [text] and got["points"] == 3 + i
        rows = httpx.get(f"{api}/{rid}/records", params={"key": text}, headers=server.headers)
        assert [r["step"] for r in rows.json()] == list(range(3 + i))
        listed = httpx.get(api, params={"project_id": text}, headers=server.headers).json()
        assert [r["recording_id"] for r in listed] == [rid]  # a pattern matches only itself
    listed_ids = {r["recording_id"] for r in httpx.get(api, headers=server.headers).json()}
    assert listed_ids >= set(ids)
    after = new_id()  # every table still takes writes and answers reads
    assert httpx.post(api, json={"recording_id": after}, headers=server.headers).status_code == 201
    ingest(server, after, "loss", 4)
    rows = httpx.get(f"{api}/{after}/records", params={"key": "loss"}, headers=server.headers)
    assert [r["value"] for r in rows.json()] == [0.0, 0.1, 0.2, 0.3]
