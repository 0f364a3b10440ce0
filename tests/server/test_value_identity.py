"""Exactly once for recorded arrays and texts: the backend knows a distribution (an
ExponentialHistogram point) by (recording, key, step, time, attributes) and a text by
(recording, key, step, time), whatever body, encoding or route carried it.

Every check counts through the read API (`read.distributions`, `read.texts` and the REST
routes under them): recorded N, stored N.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from backend_fixture import Backend
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from otlp_bodies import new_id
from test_identity import race

from markov_otel import read
from markov_otel.server.auth import OPEN
from markov_otel.server.bodies import JSON as JSON_TYPE
from markov_otel.server.ingest import ingest_events, ingest_metrics
from markov_otel.server.storage import open_store

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
T0 = 1_700_000_000_000_000_000
N = 6


def _attributes(**values: Any) -> list[dict[str, Any]]:
    out = []
    for name, value in values.items():
        kind = "intValue" if isinstance(value, int) else "stringValue"
        out.append({"key": name, "value": {kind: str(value)}})
    return out


def histogram(step: int, ns: int, count: int = 3, **attributes: Any) -> dict[str, Any]:
    """An OTLP-JSON ExponentialHistogram point at `step`, as the recorder writes one."""
    return {
        "timeUnixNano": str(ns),
        "count": str(count),
        "sum": float(count),
        "zeroCount": "0",
        "scale": 0,
        "positive": {"offset": 0, "bucketCounts": [str(count)]},
        "min": 1.0,
        "max": 1.0,
        "attributes": _attributes(**{"markov.step": step}, **attributes),
    }


def histograms(rid: str, points: list[dict[str, Any]], key: str = "w") -> dict[str, Any]:
    """An OTLP-JSON metrics request holding `points` as one ExponentialHistogram."""
    metric = {
        "name": key,
        "exponentialHistogram": {"dataPoints": points, "aggregationTemporality": 2},
    }
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": _attributes(**{"markov.recording.id": rid})},
                "scopeMetrics": [{"scope": {"name": "markov"}, "metrics": [metric]}],
            }
        ]
    }


def text(step: int, ns: int, body: str, key: str = "sample") -> dict[str, Any]:
    """An OTLP-JSON `markov.text` log record, as the recorder writes one."""
    return {
        "timeUnixNano": str(ns),
        "eventName": "markov.text",
        "body": {"stringValue": body},
        "attributes": _attributes(**{"markov.key": key, "markov.step": step}),
    }


def texts(rid: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """An OTLP-JSON logs request holding `records`."""
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": _attributes(**{"markov.recording.id": rid})},
                "scopeLogs": [{"scope": {"name": "markov"}, "logRecords": records}],
            }
        ]
    }


def post(server: Backend, signal: str, doc: dict[str, Any], protobuf: bool = False) -> None:
    """POST `doc` to /v1/<signal> without an Idempotency-Key (a collector's replay)."""
    if protobuf:
        kind = ExportMetricsServiceRequest if signal == "metrics" else ExportLogsServiceRequest
        body = json_format.ParseDict(doc, kind()).SerializeToString()
    else:
        body = json.dumps(doc).encode()
    headers = {**server.headers, **(PROTOBUF if protobuf else JSON)}
    answer = httpx.post(f"{server.url}/v1/{signal}", content=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text


@pytest.fixture
def reading(server: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """`read.*` with source=server.url uses this backend's token."""
    monkeypatch.setenv("MARKOV_API_KEY", server.token)
    return server


def test_a_histogram_body_sent_again_without_a_key_as_json_and_protobuf_is_stored_once(
    reading: Backend,
) -> None:
    """N distributions sent as OTLP-JSON, the same body again, then as protobuf, all keyless:
    read.distributions returns N, one per step, with the first arrival's counts."""
    rid = new_id()
    doc = histograms(rid, [histogram(s, T0 + s * 1000) for s in range(N)])
    post(reading, "metrics", doc)
    post(reading, "metrics", doc)
    post(reading, "metrics", doc, protobuf=True)
    got = read.distributions(rid, "w", source=reading.url)
    assert [(d.step, d.time_unix_nano, d.count) for d in got] == [
        (s, T0 + s * 1000, 3) for s in range(N)
    ]


def test_a_histogram_repeated_in_one_body_and_with_other_counts_keeps_the_first(
    reading: Backend,
) -> None:
    """A body holding a point twice stores it once; a later keyless point of the same identity
    with another count changes nothing (first value wins, as for gauge points)."""
    rid = new_id()
    points = [histogram(s, T0 + s * 1000) for s in range(N)]
    post(reading, "metrics", histograms(rid, points + points[:2]), protobuf=True)
    post(reading, "metrics", histograms(rid, [histogram(1, T0 + 1000, count=9)]))
    got = read.distributions(rid, "w", source=reading.url)
    assert [(d.step, d.count) for d in got] == [(s, 3) for s in range(N)]


def test_histograms_at_one_step_with_other_times_or_attributes_are_each_kept(
    reading: Backend,
) -> None:
    """Identity is more than the step: two histograms at step 5 with different times are both
    kept, so is one at the same time with another attribute; each only once after a replay."""
    rid = new_id()
    points = [
        histogram(5, T0),
        histogram(5, T0 + 1),
        histogram(5, T0, count=4, layer="fc1"),
    ]
    for protobuf in (False, True, False):
        post(reading, "metrics", histograms(rid, points), protobuf=protobuf)
    got = read.distributions(rid, "w", source=reading.url)
    assert sorted((d.step, d.time_unix_nano, d.count) for d in got) == [
        (5, T0, 3),
        (5, T0, 4),
        (5, T0 + 1, 3),
    ]


def test_a_logs_body_of_texts_sent_again_without_a_key_as_json_and_protobuf_is_stored_once(
    reading: Backend,
) -> None:
    """N texts sent as OTLP-JSON, again, then as protobuf, all keyless: read.texts returns N;
    two texts at one step with different times are both kept."""
    rid = new_id()
    records = [text(s, T0 + s * 1000, f"sample {s}") for s in range(N)]
    records.append(text(2, T0 + 2001, "sample 2, later"))
    doc = texts(rid, records)
    post(reading, "logs", doc)
    post(reading, "logs", doc)
    post(reading, "logs", doc, protobuf=True)
    got = read.texts(rid, "sample", source=reading.url)
    want = [(s, T0 + s * 1000, f"sample {s}") for s in range(N)]
    want.insert(3, (2, T0 + 2001, "sample 2, later"))
    assert [(t.step, t.time_unix_nano, t.text) for t in got] == want


def test_a_text_sent_again_with_another_body_keeps_the_first(reading: Backend) -> None:
    """A text's identity is (recording, key, step, time): a repeat with another body is the
    same text arriving again, and the first body stays."""
    rid = new_id()
    post(reading, "logs", texts(rid, [text(1, T0, "first")]), protobuf=True)
    post(reading, "logs", texts(rid, [text(1, T0, "second")]))
    got = read.texts(rid, "sample", source=reading.url)
    assert [(t.step, t.text) for t in got] == [(1, "first")]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    yield request.getfixturevalue("own_schema")


def connect(url: str) -> Any:
    """A plain connection to the database of `url` (autocommit)."""
    if url.startswith("sqlite:///"):
        return closing(sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None))
    return psycopg.connect(url, autocommit=True)


_COLUMNS = "recording_id, signal, name, time_unix_nano, attributes"
_AS_BEFORE = [  # the events table as the previous schema held it, each row then twice
    "DROP INDEX IF EXISTS events_by_identity",
    f"CREATE TABLE old_events AS SELECT {_COLUMNS} FROM events",
    "DROP TABLE events",
    "ALTER TABLE old_events RENAME TO events",
    f"INSERT INTO events SELECT {_COLUMNS} FROM events",
]


def test_an_older_database_holding_duplicates_keeps_each_once_and_stores_no_replay(
    db_url: str,
) -> None:
    """A database written before distributions and texts had an identity, holding each twice
    (a keyless replay then): after the upgrade each is read once, and a replay stores nothing."""
    rid = new_id()
    metrics = json.dumps(histograms(rid, [histogram(s, T0 + s) for s in range(N)])).encode()
    logs = json.dumps(texts(rid, [text(s, T0 + s, f"t{s}") for s in range(N)])).encode()
    store = open_store(db_url)
    ingest_metrics(store, OPEN, "metrics", metrics, JSON_TYPE, None)
    ingest_events(store, OPEN, "logs", logs, JSON_TYPE, None)
    store.close()
    with connect(db_url) as conn:
        for statement in _AS_BEFORE:
            conn.execute(statement)
        (held,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    assert held == 4 * N  # control: each stored twice
    store = open_store(db_url)
    try:
        for _ in range(2):
            assert len(store.events_named(rid, "markov.distribution")) == N
            assert len(store.events_named(rid, "markov.text")) == N
            ingest_metrics(store, OPEN, "metrics", metrics, JSON_TYPE, None)
            ingest_events(store, OPEN, "logs", logs, JSON_TYPE, None)
    finally:
        store.close()


def test_copies_of_a_histogram_and_a_texts_body_racing_on_six_connections_are_stored_once(
    db_url: str,
) -> None:
    """Six connections (as six server processes would hold) store the same keyless metrics
    body, then logs body, at the same moment: each distribution and text once."""
    stores = [open_store(db_url) for _ in range(6)]
    try:
        rid = new_id()
        metrics = json.dumps(histograms(rid, [histogram(s, T0 + s) for s in range(N)])).encode()
        logs = json.dumps(texts(rid, [text(s, T0 + s, f"t{s}") for s in range(N)])).encode()
        for signal, body in (("metrics", metrics), ("logs", logs)):
            assert race(stores, body, JSON_TYPE, signal) == []
        assert len(stores[0].events_named(rid, "markov.distribution")) == N
        assert len(stores[0].events_named(rid, "markov.text")) == N
    finally:
        for store in stores:
            store.close()
