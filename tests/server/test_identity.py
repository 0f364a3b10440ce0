"""Exactly once whatever carried a point: the backend knows a point by its identity (recording,
key, attributes, step, time), not by the body or the Idempotency-Key it came with.

Every check counts through the read API: the records of a key, the recording's point count, the
series API's downsampled points (built from the step buckets kept at ingest).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from backend_fixture import Backend
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from otlp_bodies import metrics_json, metrics_json_bytes, metrics_protobuf, new_id, series

from markov_otel.server.auth import OPEN
from markov_otel.server.bodies import JSON as JSON_TYPE
from markov_otel.server.ingest import ingest_events, ingest_metrics
from markov_otel.server.storage import open_store

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
T0 = 1_700_000_000_000_000_000


def post(
    server: Backend, body: bytes, ctype: dict[str, str] = JSON, key: str | None = None
) -> None:
    headers = {**server.headers, **ctype}
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = httpx.post(server.url + "/v1/metrics", content=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text


def recording(server: Backend, rid: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers)
    answer.raise_for_status()
    return dict(answer.json())


def stored(server: Backend, rid: str, key: str) -> list[tuple[int, Any, int]]:
    return [(p["step"], p["value"], p["time_unix_nano"]) for p in server.records(rid, key)]


def downsampled(server: Backend, rid: str, key: str) -> list[list[Any]]:
    query = {"ids": rid, "key": key, "max_points": 10}
    answer = httpx.get(server.url + "/api/v1/series", params=query, headers=server.headers)
    answer.raise_for_status()
    return list(answer.json()["series"][0]["points"])


def point(step: int, value: float, ns: int, **attributes: Any) -> dict[str, Any]:
    """An OTLP-JSON gauge point with `markov.step` and any other attributes."""
    attrs = [{"key": "markov.step", "value": {"intValue": str(step)}}]
    for name, attr in attributes.items():
        kind = "intValue" if isinstance(attr, int) else "stringValue"
        attrs.append({"key": name, "value": {kind: str(attr)}})
    return {"timeUnixNano": str(ns), "asDouble": value, "attributes": attrs}


def body_of(rid: str, metrics: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    doc = metrics_json(rid, [])
    scope = doc["resourceMetrics"][0]["scopeMetrics"][0]
    scope["metrics"] = [{"name": k, "gauge": {"dataPoints": p}} for k, p in metrics.items()]
    return doc


def as_protobuf(doc: dict[str, Any]) -> bytes:
    return json_format.ParseDict(doc, ExportMetricsServiceRequest()).SerializeToString()


def as_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_points_sent_again_without_the_key_cut_otherwise_and_in_the_other_encoding_are_stored_once(
    server: Backend,
) -> None:
    """A batch stored under its key, then its points again without a key: whole, cut in three
    protobuf bodies, joined with new points: each point once, new ones stored, counts right."""
    rid = new_id()
    points = series("loss", 300)
    post(server, metrics_json_bytes(rid, points), key=f"{rid}:w:metrics:0")
    post(server, metrics_json_bytes(rid, points))  # no key: a collector's replay
    for part in (points[200:], points[:100], points[100:200]):
        post(server, metrics_protobuf(rid, part), PROTOBUF)
    more = series("loss", 400)  # 300 known points and 100 new ones in one body
    post(server, metrics_protobuf(rid, more), PROTOBUF)
    expected = [(s, v, ns) for _, s, v, ns in more]
    assert stored(server, rid, "loss") == expected
    assert recording(server, rid)["points"] == 400


def test_one_body_holding_a_point_twice_stores_it_once(server: Backend) -> None:
    """A body that repeats a series (two resources, as a collector's batch joins two requests)
    or a point within one metric stores each identity once, the first one given."""
    rid = new_id()
    first = metrics_json(rid, series("loss", 50))
    doc = metrics_json(rid, series("loss", 80))
    doc["resourceMetrics"] = first["resourceMetrics"] + doc["resourceMetrics"]
    gauge = doc["resourceMetrics"][1]["scopeMetrics"][0]["metrics"][0]["gauge"]
    gauge["dataPoints"].append(point(3, 99.0, T0 + 3000))  # step 3 again, another value
    post(server, as_json(doc))
    assert stored(server, rid, "loss") == [(s, v, ns) for _, s, v, ns in series("loss", 80)]
    assert recording(server, rid)["points"] == 80


def test_same_step_other_time_and_same_time_other_attributes_are_each_kept_once(
    server: Backend,
) -> None:
    """Identity is not the step alone: another time, or other attributes (none, cpu 0, cpu 1)
    at the same step and time, are other points; each is stored once when all come again, in
    the other encoding too."""
    rid = new_id()
    metrics = {
        "x": [point(5, 1.0, T0), point(5, 2.0, T0 + 1)],
        "cpu": [point(5, 0.1, T0), point(5, 0.2, T0, cpu=0), point(5, 0.3, T0, cpu=1)],
        "dev": [point(5, 7.0, T0, device="sda", cpu=0), point(5, 8.0, T0, cpu="0")],
    }
    doc = body_of(rid, metrics)
    post(server, as_json(doc))
    post(server, as_protobuf(doc), PROTOBUF)
    post(server, as_json(doc))
    later = body_of(rid, {"cpu": [point(5, 0.4, T0, cpu=2)], "x": [point(5, 3.0, T0 + 2)]})
    post(server, as_protobuf(later), PROTOBUF)  # new attributes, new time, after the others
    assert stored(server, rid, "x") == [(5, 1.0, T0), (5, 2.0, T0 + 1), (5, 3.0, T0 + 2)]
    assert sorted(stored(server, rid, "cpu")) == [(5, v, T0) for v in (0.1, 0.2, 0.3, 0.4)]
    assert sorted(stored(server, rid, "dev")) == [(5, 7.0, T0), (5, 8.0, T0)]  # cpu 0 ≠ "0"
    assert recording(server, rid)["points"] == 9


def test_a_repeat_with_another_value_leaves_the_first_and_the_rollups_as_they_were(
    server: Backend,
) -> None:
    """First wins: the same identities again with other values (a new minimum, a new maximum,
    a NaN) change no stored value, no count and no downsampled point."""
    rid = new_id()
    points = [("loss", s, 1.0 + s / 1000, T0 + s) for s in range(1000)]
    post(server, metrics_json_bytes(rid, points))
    before = downsampled(server, rid, "loss")
    changed = [(k, s, -5.0 if s == 10 else 9.0 if s == 20 else v, ns) for k, s, v, ns in points]
    changed[30] = ("loss", 30, float("nan"), T0 + 30)
    post(server, metrics_json_bytes(rid, changed))
    post(server, metrics_protobuf(rid, changed), PROTOBUF)
    assert stored(server, rid, "loss") == [(s, v, ns) for _, s, v, ns in points]
    assert downsampled(server, rid, "loss") == before
    assert recording(server, rid)["points"] == 1000
    assert bucket_counts(server.db, rid) == {1000}


def bucket_counts(db: str, rid: str) -> set[int]:
    """The recording's point count at each bucket level, summed over its buckets."""
    sql = "SELECT width, SUM(n) FROM point_buckets WHERE series_id IN"
    sql += " (SELECT series_id FROM series WHERE recording_id = {}) GROUP BY width"
    if db.startswith("sqlite:///"):
        with sqlite3.connect(db[len("sqlite:///") :]) as conn:
            return {int(n) for _, n in conn.execute(sql.format("?"), [rid]).fetchall()}
    with psycopg.connect(db) as pg:
        return {int(n) for _, n in pg.execute(sql.format("%s"), [rid]).fetchall()}


@pytest.mark.postgres
def test_concurrent_copies_of_a_body_on_postgres_are_stored_once(own_schema: str) -> None:
    """Six connections (as six server processes would hold) store the same keyless body at
    the same moment (OTLP-JSON, then protobuf with attributes): every point once, buckets and
    count included."""
    stores = [open_store(own_schema) for _ in range(6)]
    try:
        rid = new_id()
        far = {k: [point(10**6, 1.0, T0)] for k in ("loss", "acc")}
        far["cpu"] = [point(10**6, 1.0, T0, cpu=0)]
        # The series exist already (their one point far away): the race is on the points alone.
        ingest_metrics(stores[0], OPEN, "metrics", as_json(body_of(rid, far)), JSON_TYPE, None)
        bodies = [
            metrics_json_bytes(rid, series("loss", 2000) + series("acc", 2000)),
            as_protobuf(body_of(rid, {"cpu": [point(s, 0.5, T0 + s, cpu=0) for s in range(500)]})),
        ]
        for body, ctype in zip(bodies, (JSON_TYPE, "application/x-protobuf"), strict=True):
            assert race(stores, body, ctype) == []
        reader = stores[0]
        for key, n in (("loss", 2000), ("acc", 2000), ("cpu", 500)):
            steps = [step for step, _, _ in reader.records(rid, key)]
            assert steps == [*range(n), 10**6], key
        found = reader.get(rid)
        assert found is not None and found["points"] == 4503
        assert bucket_counts(own_schema, rid) == {4503}
    finally:
        for store in stores:
            store.close()


def race(
    stores: list[Any], body: bytes, ctype: str, signal: str = "metrics"
) -> list[BaseException]:
    """Each store ingests `body` (of `signal`: metrics, or logs and traces) in a thread of its
    own, all let go at once; what they raised."""
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []
    ingest = ingest_metrics if signal == "metrics" else ingest_events

    def send(store: Any) -> None:
        try:
            start.wait(timeout=30)
            ingest(store, OPEN, signal, body, ctype, None)
        except BaseException as exc:  # reported by the caller's assert
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_points_with_attributes_in_a_series_stored_before_they_were_kept(tmp_path: Path) -> None:
    """An upgraded series' points have no attributes on record: a repeat with attributes (a
    system metric's state) is matched to them and not stored again; new points are."""
    db = tmp_path / "old.db"
    store = open_store(f"sqlite:///{db}")
    rid = new_id()
    ingest_metrics(
        store, OPEN, "metrics", metrics_json_bytes(rid, series("cpu", 5)), JSON_TYPE, None
    )
    store.close()
    with sqlite3.connect(db) as conn:  # as the previous schema held them
        conn.execute("UPDATE points SET attrs = NULL")
        conn.execute("UPDATE series SET attrs_unknown = 1")
    store = open_store(f"sqlite:///{db}")
    try:
        again = {"cpu": [point(s, s / 10, T0 + s * 1000, state="user") for s in range(8)]}
        ingest_metrics(store, OPEN, "metrics", as_json(body_of(rid, again)), JSON_TYPE, None)
        assert [step for step, _, _ in store.records(rid, "cpu")] == list(range(8))
    finally:
        store.close()
