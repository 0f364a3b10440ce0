"""`mkv serve` on a database written by the previous schema: it starts, reads and writes.

The old tables below are what the backend created before start/end times and recording-scoped
idempotency keys (frozen here as the previous release wrote them). Rows written then hold
nested parameter values, which reads now show in the flat form.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

IDENTITY = "name, project_id, notes, dataset_id, model_class, model_id"
OLD_SCHEMA = [
    """CREATE TABLE recordings (recording_id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
        project_id TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
        dataset_id TEXT NOT NULL DEFAULT '', model_class TEXT NOT NULL DEFAULT '',
        model_id TEXT NOT NULL DEFAULT '', metadata TEXT NOT NULL,
        hyper_parameters TEXT NOT NULL, summary TEXT NOT NULL, status TEXT NOT NULL,
        requirements TEXT, points BIGINT NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE points (recording_id TEXT NOT NULL, key TEXT NOT NULL,
        step BIGINT NOT NULL, value REAL, value_text TEXT, time_unix_nano BIGINT NOT NULL)""",
    """CREATE TABLE series (recording_id TEXT NOT NULL, key TEXT NOT NULL,
        PRIMARY KEY (recording_id, key))""",
    """CREATE TABLE alerts (recording_id TEXT NOT NULL, alert_id TEXT NOT NULL,
        seq BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (recording_id, alert_id))""",
    """CREATE TABLE events (recording_id TEXT NOT NULL, signal TEXT NOT NULL,
        name TEXT NOT NULL, time_unix_nano BIGINT NOT NULL, attributes TEXT NOT NULL)""",
    "CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, created_at TEXT NOT NULL)",
]
OLD_ID = "0ld" + "0" * 29
OLD_ROW = (
    OLD_ID, "old-run", "p", "", "", "", "model-1",
    json.dumps({"data": {"split": 0.8}}),
    json.dumps({"opt": {"name": "sgd"}, "opt.name": "sgd", "lr": 0.1}),
    json.dumps({}), "finished", None, 0,
    "2024-01-01T00:00:00.000000+00:00", "2024-01-01T00:00:00.000000+00:00",
)  # fmt: skip


def fill_old(conn: Any, mark: str) -> None:
    for statement in OLD_SCHEMA:
        conn.execute(statement)
    marks = ", ".join([mark] * len(OLD_ROW))
    conn.execute(
        f"INSERT INTO recordings (recording_id, {IDENTITY}, metadata, hyper_parameters, summary,"
        f" status, requirements, points, created_at, updated_at) VALUES ({marks})",
        OLD_ROW,
    )
    conn.execute(
        f"INSERT INTO idempotency_keys VALUES ({mark}, {mark})", ("k:metrics:0", "2024-01-01")
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL holding the previous schema and one row (PostgreSQL: a fresh schema)."""
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            fill_old(conn, "?")
        yield f"sqlite:///{path}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = "old_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            fill_old(conn, "%s")
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def test_serve_on_a_database_of_the_previous_schema(old_db: str, tmp_path: Path) -> None:
    """The old row reads (times null, parameters flat); new fields and batches are stored."""
    server = Backend(tmp_path / "upgrade", db=old_db)
    try:
        api = server.url + "/api/v1/recordings"
        old = httpx.get(f"{api}/{OLD_ID}", headers=server.headers).json()
        assert old["name"] == "old-run" and old["status"] == "finished"
        assert old["started_at"] is None and old["ended_at"] is None
        assert old["hyper_parameters"] == {"opt.name": "sgd", "lr": 0.1}
        assert old["metadata"] == {"data.split": 0.8}
        rid = new_id()
        body = {"recording_id": rid, "started_at": "2025-01-01T00:00:00Z"}
        assert httpx.post(api, json=body, headers=server.headers).status_code == 201
        batch = metrics_json_bytes(rid, series("x", 3))
        headers = {**server.headers, "Content-Type": "application/json", "Idempotency-Key": "k"}
        for _ in range(2):
            answer = httpx.post(server.url + "/v1/metrics", content=batch, headers=headers)
            assert answer.status_code == 200
        listed = httpx.get(api, headers=server.headers).json()
        assert [r["recording_id"] for r in listed] == [rid, OLD_ID]
        assert listed[0]["points"] == 3
        server.restart()  # a second start on the upgraded database changes nothing
        assert httpx.get(f"{api}/{rid}", headers=server.headers).json()["points"] == 3
    finally:
        server.stop()
