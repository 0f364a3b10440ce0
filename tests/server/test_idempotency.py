"""Idempotency-Key: scoped to the batch's recording, bound to a digest of the body, never forged.

The recorder sends `<recording_id>:<writer_id>:<signal>:<line>`; to the server a key is opaque.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend
from google.rpc.status_pb2 import Status
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series

from markov_otel.rules import MAX_IDEMPOTENCY_KEY

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
ADMIN, TEAM_A, TEAM_B = "admin", "team-a", "team-b"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def tenants(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend with an admin token and two tokens scoped to projA and projB."""
    db = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    extra = ["--token", f"{TEAM_A}:projA", "--token", f"{TEAM_B}:projB"]
    server = Backend(tmp_path / "tenants", token=ADMIN, db=db, extra_args=extra)
    try:
        yield server
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send(
    server: Backend, token: str, body: bytes, key: str | None, ctype: dict[str, str] = JSON
) -> httpx.Response:
    headers = {**bearer(token), **ctype}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(server.url + "/v1/metrics", content=body, headers=headers)


def points_of(server: Backend, recording_id: str) -> int:
    answer = httpx.get(f"{server.url}/api/v1/recordings/{recording_id}", headers=server.headers)
    return int(answer.json()["points"]) if answer.status_code == 200 else 0


def test_a_key_used_in_another_projects_recording_never_hides_a_batch(tenants: Backend) -> None:
    """Project B sending its own batch under A's next key leaves A's real batch stored."""
    victim, own = new_id(), new_id()
    key = f"{victim}:writer1:metrics:0"
    body_b = metrics_json_bytes(own, series("x", 2), **{"markov.project.id": "projB"})
    assert send(tenants, TEAM_B, body_b, key).status_code == 200
    body_a = metrics_json_bytes(victim, series("loss", 7), **{"markov.project.id": "projA"})
    assert send(tenants, TEAM_A, body_a, key).status_code == 200
    assert points_of(tenants, victim) == 7
    assert points_of(tenants, own) == 2
    # B cannot burn a key inside A's recording either: the write is refused, nothing kept
    later = f"{victim}:writer1:metrics:1"
    intrusion = metrics_json_bytes(victim, series("loss", 1), **{"markov.project.id": "projB"})
    assert send(tenants, TEAM_B, intrusion, later).status_code == 403
    body_a2 = metrics_json_bytes(
        victim, series("loss", 3, start_ns=2 * 10**18), **{"markov.project.id": "projA"}
    )
    assert send(tenants, TEAM_A, body_a2, later).status_code == 200
    assert points_of(tenants, victim) == 10


def test_a_replay_answers_200_once_stored_and_another_body_is_422(tenants: Backend) -> None:
    """Same key and body: 200, stored once (also gzip-encoded); same key, new body: 422."""
    rid = new_id()
    key = f"{rid}:w:metrics:0"
    body = metrics_json_bytes(rid, series("loss", 5))
    for _ in range(3):
        assert send(tenants, ADMIN, body, key).status_code == 200
    gz = {**JSON, "Content-Encoding": "gzip"}
    assert send(tenants, ADMIN, gzip.compress(body), key, gz).status_code == 200
    assert points_of(tenants, rid) == 5
    other = metrics_json_bytes(rid, series("loss", 6))
    answer = send(tenants, ADMIN, other, key)
    assert answer.status_code == 422
    assert "Idempotency-Key" in answer.json()["message"]
    pb = send(tenants, ADMIN, metrics_protobuf(rid, series("loss", 6)), key, PROTOBUF)
    assert pb.status_code == 422 and "different body" in Status.FromString(pb.content).message
    assert points_of(tenants, rid) == 5
    assert send(tenants, ADMIN, body, key).status_code == 200  # the original still replays
    assert points_of(tenants, rid) == 5


def test_one_key_in_two_recordings_is_two_batches(tenants: Backend) -> None:
    """Keys are scoped to a recording: the same key in another recording stores its batch."""
    first, second = new_id(), new_id()
    key = "0:metrics:0"  # a key two writers could both produce
    assert send(tenants, ADMIN, metrics_json_bytes(first, series("x", 4)), key).status_code == 200
    assert send(tenants, ADMIN, metrics_json_bytes(second, series("x", 6)), key).status_code == 200
    assert (points_of(tenants, first), points_of(tenants, second)) == (4, 6)


def test_a_refused_batch_keeps_no_key(tenants: Backend) -> None:
    """A batch refused with 400 stores neither points nor its key: the fixed body then goes in."""
    rid = new_id()
    key = f"{rid}:w:metrics:0"
    bad = metrics_json_bytes(rid, [("x", 0, 1.0, 1), ("x", 2**63, 1.0, 2)])
    assert send(tenants, ADMIN, bad, key).status_code == 400
    good = metrics_json_bytes(rid, series("x", 3))
    assert send(tenants, ADMIN, good, key).status_code == 200
    assert points_of(tenants, rid) == 3


def test_idempotency_key_length_follows_the_rule(tenants: Backend) -> None:
    """A key of MAX_IDEMPOTENCY_KEY characters is taken; one more is 400."""
    rid = new_id()
    body = metrics_json_bytes(rid, series("x", 1))
    assert send(tenants, ADMIN, body, "k" * (MAX_IDEMPOTENCY_KEY + 1)).status_code == 400
    assert send(tenants, ADMIN, body, "k" * MAX_IDEMPOTENCY_KEY).status_code == 200
    split = f"{rid}:w:metrics:12.2/3"  # the recorder's suffix for one part of a split line
    body2 = metrics_json_bytes(rid, series("y", 2))
    assert send(tenants, ADMIN, body2, split).status_code == 200
    assert points_of(tenants, rid) == 3
