"""Ingest never waits for readers: reads have their own connections and threads, live pages get
304 while nothing changes, and one read's work is bounded.

The blocked reads are real: an admin session of PostgreSQL holds an ACCESS EXCLUSIVE lock on the
alerts table, so every GET …/alerts waits inside the database until the test lets it go.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

from markov_otel.server.lanes import READ_CONNECTIONS
from markov_otel.server.series import MAX_POINTS_A_RESPONSE

WAIT = 60.0  # generous: a bound on how long a loaded machine may take, not a speed claim


def post(server: Backend, rid: str, points: list[tuple[str, int, float, int]]) -> int:
    headers = {**server.headers, "Content-Type": "application/json"}
    body = metrics_json_bytes(rid, points)
    answer = httpx.post(server.url + "/v1/metrics", content=body, headers=headers, timeout=WAIT)
    return answer.status_code


def waiting_on_locks(url: str) -> int:
    """How many sessions of this database wait for a lock right now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def readers_stuck(server: Backend, url: str, rid: str) -> Iterator[list[int]]:
    """READ_CONNECTIONS + 3 reads of a recording's alerts, every reader session of the server
    stuck behind a lock on that table (the rest queued) for the body of the `with`; yields the
    status codes answered so far, and on leaving releases the lock and waits for every read."""
    answers: list[int] = []
    alerts = f"{server.url}/api/v1/recordings/{rid}/alerts"

    def read() -> None:
        answers.append(httpx.get(alerts, headers=server.headers, timeout=WAIT).status_code)

    readers = [threading.Thread(target=read) for _ in range(READ_CONNECTIONS + 3)]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("BEGIN")
        admin.execute("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
        for thread in readers:
            thread.start()
        deadline = threading.Event()
        for _ in range(int(WAIT * 10)):  # until the server's reader sessions wait on the lock
            if waiting_on_locks(url) >= READ_CONNECTIONS:
                break
            deadline.wait(0.1)
        try:
            assert waiting_on_locks(url) == READ_CONNECTIONS
            yield answers
        finally:
            admin.execute("COMMIT")
            for thread in readers:
                thread.join(WAIT)


@pytest.mark.postgres
def test_ingest_and_healthz_answer_while_every_reader_is_stuck(
    own_schema: str, tmp_path: Path
) -> None:
    """With more reads stuck in the database than the server has reader connections, a batch is
    stored, /healthz answers and the reads are still waiting; released, every read answers."""
    server = Backend(tmp_path / "pg", db=own_schema)
    try:
        rid = new_id()
        assert post(server, rid, series("x", 10)) == 200
        with readers_stuck(server, own_schema, rid) as answers:
            assert post(server, rid, [("x", 10 + i, 1.0, 1) for i in range(5)]) == 200
            assert httpx.get(server.url + "/healthz", timeout=WAIT).status_code == 200
            assert answers == []  # the reads are still stuck behind the lock
        assert answers == [200] * (READ_CONNECTIONS + 3)
        stored = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers)
        assert stored.json()["points"] == 15
    finally:
        server.stop()


@pytest.mark.postgres
def test_a_recorders_register_and_patch_answer_while_every_reader_is_stuck(
    own_schema: str, tmp_path: Path
) -> None:
    """With both reader threads stuck in the database and more reads queued behind them, a
    registration (201, with its last step) and a PATCH (200, with its tags) are answered: a
    write's own read never queues behind readers (a recorder's stop() would time out)."""
    server = Backend(tmp_path / "pg", db=own_schema)
    try:
        rid, other = new_id(), new_id()
        assert post(server, rid, series("x", 10)) == 200
        with readers_stuck(server, own_schema, rid) as answers:
            api = f"{server.url}/api/v1/recordings"
            registered = httpx.post(
                api, json={"recording_id": other}, headers=server.headers, timeout=WAIT
            )
            patched = httpx.patch(
                f"{api}/{rid}", json={"status": "finished"}, headers=server.headers, timeout=WAIT
            )
            assert answers == []  # the reads are still stuck behind the lock
        assert registered.status_code == 201 and registered.json()["last_step"] is None
        assert patched.status_code == 200 and patched.json()["tags"] == []
        assert patched.json()["status"] == "finished"
        assert answers == [200] * (READ_CONNECTIONS + 3)
    finally:
        server.stop()


def test_an_unchanged_recording_is_answered_304_until_a_batch_lands(server: Backend) -> None:
    """GET of a recording and of its series carry an ETag; presented again, 304 with no body;
    after a batch, 200 with a new tag and the new points."""
    rid = new_id()
    assert post(server, rid, series("x", 10)) == 200
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=WAIT) as client:
        series_asked = {"ids": rid, "key": "x", "since_step": 9}
        for path, params in ((f"/api/v1/recordings/{rid}", {}), ("/api/v1/series", series_asked)):
            first = client.get(path, params=params)
            tag = first.headers["etag"]
            assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
            again = client.get(path, params=params, headers={"If-None-Match": tag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == tag
        assert post(server, rid, [("x", 10, 5.0, 1)]) == 200
        moved = client.get(f"/api/v1/recordings/{rid}", headers={"If-None-Match": tag})
        assert moved.status_code == 200 and moved.json()["points"] == 11
        new = client.get("/api/v1/series", params={"ids": rid, "key": "x", "since_step": 9},
                         headers={"If-None-Match": tag})  # fmt: skip
        assert new.status_code == 200 and new.json()["series"][0]["points"] == [[10, 5.0, 1]]


def test_a_series_answer_of_more_points_than_the_bound_is_a_400_naming_it(
    backend: Backend,
) -> None:
    """ids x max_points over MAX_POINTS_A_RESPONSE is refused before any read, saying why."""
    ids = ",".join(new_id() for _ in range(3))
    answer = httpx.get(
        backend.url + "/api/v1/series",
        params={"ids": ids, "key": "x", "max_points": MAX_POINTS_A_RESPONSE // 2},
        headers=backend.headers,
    )
    assert answer.status_code == 400
    assert f"more than {MAX_POINTS_A_RESPONSE} points" in answer.json()["error"]
