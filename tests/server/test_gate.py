"""The ingest gate: at most --max-concurrent-ingest bodies in progress; beyond, 503 + Retry-After.

Real sockets hold slots: each sends its headers and half a valid body, then waits. While they
wait, the next body is refused at once (before it is read); when they finish, bodies go in again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series

from markov_otel.errors import ConfigError
from markov_otel.server import create_app

SLOTS = 2
WAIT = 20.0  # seconds to wait for the server to have taken the held slots (not a timing claim)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Backend]:
    server = Backend(tmp_path / "gated", extra_args=["--max-concurrent-ingest", str(SLOTS)])
    yield server
    server.stop()


def hold(server: Backend, body: bytes) -> socket.socket:
    """A POST /v1/metrics whose body stops half way: the server holds a slot for it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def finish(sock: socket.socket, body: bytes) -> int:
    """Send the rest of a held body; the answer's status code."""
    sock.sendall(body[len(body) // 2 :])
    reply = b""
    while b"\r\n" not in reply:
        reply += sock.recv(4096)
    sock.close()
    return int(reply.split(b" ", 2)[1])


def refused_while_full(server: Backend, rid: str) -> tuple[httpx.Response, int]:
    """Post one-point batches until the server reports itself full (it takes the held slots as
    their headers land); the refusal and how many went in before it."""
    headers = {**server.headers, "Content-Type": "application/x-protobuf"}
    deadline, stored = time.monotonic() + WAIT, 0
    while True:
        body = metrics_protobuf(rid, [("z", stored, 1.0, 1)])
        answer = httpx.post(server.url + "/v1/metrics", content=body, headers=headers)
        if answer.status_code != 200 or time.monotonic() > deadline:
            return answer, stored
        stored += 1
        time.sleep(0.05)


def test_bodies_past_the_bound_get_503_with_retry_after(gated: Backend) -> None:
    """With every slot held, ingest and REST bodies get 503 + Retry-After; then all goes in."""
    rid = new_id()
    bodies = [metrics_json_bytes(rid, series(f"held{i}", 50)) for i in range(SLOTS)]
    socks = [hold(gated, body) for body in bodies]
    answer, early = refused_while_full(gated, rid)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    from google.rpc.status_pb2 import Status

    assert "max-concurrent-ingest" in Status.FromString(answer.content).message
    register = httpx.post(
        gated.url + "/api/v1/recordings", json={"recording_id": new_id()}, headers=gated.headers
    )
    assert register.status_code == 503 and register.headers["retry-after"] == "1"
    reads = httpx.get(gated.url + "/api/v1/recordings", headers=gated.headers)
    assert reads.status_code == 200  # reads carry no body: never gated
    assert [finish(sock, body) for sock, body in zip(socks, bodies, strict=True)] == [200] * SLOTS
    after = metrics_json_bytes(rid, series("after", 7))
    headers = {**gated.headers, "Content-Type": "application/json"}
    assert httpx.post(gated.url + "/v1/metrics", content=after, headers=headers).status_code == 200
    recording = httpx.get(f"{gated.url}/api/v1/recordings/{rid}", headers=gated.headers).json()
    assert recording["points"] == 50 * SLOTS + 7 + early  # nothing refused was stored


@pytest.mark.parametrize("bad", [0, -1, True])
def test_the_bound_must_be_a_positive_integer(tmp_path: Path, bad: int) -> None:
    """max_concurrent_ingest=0 (or negative, or a bool) is refused before anything opens."""
    with pytest.raises(ConfigError, match="max_concurrent_ingest"):
        create_app(db=str(tmp_path / "x.db"), tokens=[], max_concurrent_ingest=bad)
    assert not (tmp_path / "x.db").exists()
