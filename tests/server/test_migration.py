"""`mkv serve` on a database written by an older schema: it starts, reads and writes.

The old tables below are what the backend created before start/end times and recording-scoped
idempotency keys (frozen here as the previous release wrote them), and then what it created
before points were keyed by series id (points, series and step buckets keyed by the text
columns recording_id and key), and then what it created before points kept their attributes
(their identity: a repeat of an old point is still stored once). Rows written then hold nested
parameter values, which reads now show in the flat form, and points, which read back the same
after they are moved over.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from backend_fixture import Backend, schema_of_its_own
from otlp_bodies import metrics_json, metrics_json_bytes, new_id, series

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
# The tables of the text-keyed points layout that the previous release lacked.
TEXT_KEYED = [
    "CREATE INDEX points_by_key ON points (recording_id, key, step, time_unix_nano)",
    """CREATE TABLE batch_keys (recording_id TEXT NOT NULL, key TEXT NOT NULL,
        digest TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (recording_id, key))""",
    """CREATE TABLE point_buckets (recording_id TEXT NOT NULL, key TEXT NOT NULL,
        width BIGINT NOT NULL, bucket BIGINT NOT NULL, min_step BIGINT, min_value REAL,
        min_time BIGINT, max_step BIGINT, max_value REAL, max_time BIGINT, odd_step BIGINT,
        odd_text TEXT, odd_time BIGINT, n BIGINT NOT NULL,
        PRIMARY KEY (recording_id, key, width, bucket))""",
    """CREATE TABLE point_buckets_ready (recording_id TEXT NOT NULL, key TEXT NOT NULL,
        PRIMARY KEY (recording_id, key))""",
]
SCHEMAS = {"previous release": OLD_SCHEMA, "text-keyed points": OLD_SCHEMA + TEXT_KEYED}
OLD_ID = "0ld" + "0" * 29
T0 = 1_700_000_000_000_000_000
# (key, step, value, value_text, time): exact in REAL; one dip, one NaN; "empty" has no points.
OLD_POINTS = [("loss", s, 1 + s / 1024, None, T0 + s) for s in range(1000)]
OLD_POINTS[500] = ("loss", 500, -5.0, None, T0 + 500)
OLD_POINTS[7] = ("loss", 7, None, "NaN", T0 + 7)
OLD_POINTS += [("acc", s, 0.5, None, T0 + s) for s in range(3)]
OLD_KEYS = ["acc", "empty", "loss"]
OLD_ROW = (
    OLD_ID, "old-run", "p", "", "", "", "model-1",
    json.dumps({"data": {"split": 0.8}}),
    json.dumps({"opt": {"name": "sgd"}, "opt.name": "sgd", "lr": 0.1}),
    json.dumps({}), "finished", None, 0,
    "2024-01-01T00:00:00.000000+00:00", "2024-01-01T00:00:00.000000+00:00",
)  # fmt: skip


def fill_old(conn: Any, mark: str, schema: list[str]) -> None:
    for statement in schema:
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
    marks = ", ".join([mark] * 6)
    for row in OLD_POINTS:
        conn.execute(f"INSERT INTO points VALUES ({marks})", (OLD_ID, *row))
    for key in OLD_KEYS:
        conn.execute(f"INSERT INTO series VALUES ({mark}, {mark})", (OLD_ID, key))
    if schema is not OLD_SCHEMA:  # a bucket that lies (min 99 at step 3): rebuilt, never read
        marks = ", ".join([mark] * 14)
        stale = (OLD_ID, "loss", 16, 0, 3, 99.0, T0, 3, 99.0, T0, None, None, None, 16)
        conn.execute(f"INSERT INTO point_buckets VALUES ({marks})", stale)
        conn.execute(f"INSERT INTO point_buckets_ready VALUES ({mark}, {mark})", (OLD_ID, "loss"))
    conn.execute(f"UPDATE recordings SET points = {len(OLD_POINTS)}")


@pytest.fixture(params=list(SCHEMAS))
def old_schema(request: pytest.FixtureRequest) -> list[str]:
    """The CREATE statements of an older backend."""
    return SCHEMAS[request.param]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_db(request: pytest.FixtureRequest, tmp_path: Path, old_schema: list[str]) -> Iterator[str]:
    """A database URL holding an older schema, one recording and its points (PostgreSQL: a
    fresh schema)."""
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            fill_old(conn, "?", old_schema)
        yield f"sqlite:///{path}"
        return
    with schema_of_its_own(request.getfixturevalue("postgres_url"), "old") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            fill_old(conn, "%s", old_schema)
        yield url


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


def test_points_of_an_older_database_read_the_same_by_series_id(
    old_db: str, tmp_path: Path
) -> None:
    """Every old point reads back as stored (by key, non-finite included), keys and count stay,
    the series API buckets them afresh (a stale bucket is not read), and a batch continues the
    old series."""
    server = Backend(tmp_path / "upgrade", db=old_db)
    try:
        for key in ("loss", "acc"):
            expected = [(s, v if t is None else t, ns) for k, s, v, t, ns in OLD_POINTS if k == key]
            stored = [
                (p["step"], p["value"], p["time_unix_nano"]) for p in server.records(OLD_ID, key)
            ]
            assert stored == expected
        api = f"{server.url}/api/v1/recordings/{OLD_ID}"
        old = httpx.get(api, headers=server.headers).json()
        assert old["keys"] == OLD_KEYS and old["points"] == len(OLD_POINTS)
        query = {"ids": OLD_ID, "key": "loss", "max_points": 10}
        answer = httpx.get(server.url + "/api/v1/series", params=query, headers=server.headers)
        (loss,) = answer.json()["series"]
        assert [500, -5.0, T0 + 500] in loss["points"] and [7, "NaN", T0 + 7] in loss["points"]
        assert all(value != 99.0 for _, value, _ in loss["points"])
        batch = metrics_json_bytes(
            OLD_ID, [("loss", 1000 + i, 2.0, T0 + 1000 + i) for i in range(3)]
        )
        headers = {**server.headers, "Content-Type": "application/json"}
        answer = httpx.post(server.url + "/v1/metrics", content=batch, headers=headers)
        assert answer.status_code == 200
        server.restart()  # a second start on the moved database changes nothing
        # the move is said once, while it runs (a big database takes a while), not again
        assert server.log().count("moving this database's points to series ids") == 1
        assert [p["step"] for p in server.records(OLD_ID, "loss")] == list(range(1003))
        assert httpx.get(api, headers=server.headers).json()["points"] == len(OLD_POINTS) + 3
    finally:
        server.stop()


# The tables of the backend that keyed points by series id, before points kept attributes.
SERIES_ID_SCHEMA = [
    OLD_SCHEMA[0].replace("updated_at TEXT NOT NULL)", "updated_at TEXT NOT NULL,"
                          " started_at TEXT, ended_at TEXT)"),
    """CREATE TABLE series (series_id {id_column}, recording_id TEXT NOT NULL, key TEXT NOT NULL,
        buckets_ready INTEGER NOT NULL DEFAULT 0, UNIQUE (recording_id, key))""",
    """CREATE TABLE points (series_id BIGINT NOT NULL, step BIGINT NOT NULL, value {value_type},
        value_text TEXT, time_unix_nano BIGINT NOT NULL)""",
    "CREATE INDEX points_by_series ON points (series_id, step, time_unix_nano)",
    TEXT_KEYED[1],
]  # fmt: skip
CPU_KEY = "system.cpu.utilization/state.user"


def fill_series_ids(conn: Any, mark: str, id_column: str, value_type: str) -> None:
    """One recording with a plain key and a system key (whose attributes were not kept)."""
    for statement in SERIES_ID_SCHEMA:
        conn.execute(statement.format(id_column=id_column, value_type=value_type))
    marks = ", ".join([mark] * len(OLD_ROW))
    conn.execute(
        f"INSERT INTO recordings (recording_id, {IDENTITY}, metadata, hyper_parameters, summary,"
        f" status, requirements, points, created_at, updated_at) VALUES ({marks})",
        OLD_ROW,
    )
    for series_id, key in ((1, "loss"), (2, CPU_KEY)):
        conn.execute(
            f"INSERT INTO series VALUES ({mark}, {mark}, {mark}, 0)", (series_id, OLD_ID, key)
        )
        for step in range(100):
            row = (series_id, step, step / 100, T0 + step)
            conn.execute(f"INSERT INTO points VALUES ({mark}, {mark}, {mark}, NULL, {mark})", row)
    conn.execute("UPDATE recordings SET points = 200")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def series_id_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the series-id schema before points kept their attributes."""
    if request.param == "sqlite":
        path = tmp_path / "series-ids.db"
        with sqlite3.connect(path) as conn:
            fill_series_ids(conn, "?", "INTEGER PRIMARY KEY", "")
        yield f"sqlite:///{path}"
        return
    with schema_of_its_own(request.getfixturevalue("postgres_url"), "ids") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            identity = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
            fill_series_ids(conn, "%s", identity, "DOUBLE PRECISION")
        yield url


def test_an_upgraded_database_stores_a_repeat_of_its_old_points_once(
    series_id_db: str, tmp_path: Path
) -> None:
    """After the upgrade, the old points sent again (the system key's with its `state`
    attribute, which the old rows lack) are not stored twice; points after them are, and a
    second start changes nothing."""
    server = Backend(tmp_path / "upgrade", db=series_id_db)
    try:
        headers = {**server.headers, "Content-Type": "application/json"}
        cpu = [
            {"timeUnixNano": str(T0 + s), "asDouble": s / 100, "attributes": [
                {"key": "markov.step", "value": {"intValue": str(s)}},
                {"key": "state", "value": {"stringValue": "user"}},
                {"key": "markov.key", "value": {"stringValue": CPU_KEY}}]}
            for s in range(150)
        ]  # fmt: skip
        doc = metrics_json(OLD_ID, [("loss", s, s / 100, T0 + s) for s in range(150)])
        metrics = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        metrics.append({"name": "system.cpu.utilization", "gauge": {"dataPoints": cpu}})
        for _ in range(2):
            body = json.dumps(doc).encode()
            answer = httpx.post(server.url + "/v1/metrics", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            server.restart()
        for key in ("loss", CPU_KEY):
            stored = [(p["step"], p["time_unix_nano"]) for p in server.records(OLD_ID, key)]
            assert stored == [(s, T0 + s) for s in range(150)], key
        api = f"{server.url}/api/v1/recordings/{OLD_ID}"
        assert httpx.get(api, headers=server.headers).json()["points"] == 300
    finally:
        server.stop()
