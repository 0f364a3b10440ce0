"""The ingest gate: at most --max-concurrent-ingest bodies parsed and stored at once, a bound on
the bytes of bodies arriving; beyond either, 503 + Retry-After.

Real sockets send their headers and half a valid body, then wait: they hold bytes, not slots.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixture import PARSERS, Backend
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series
from own_loop import run_alone

from markov_otel.errors import ConfigError
from markov_otel.server import create_app
from markov_otel.server.bodies import ApiError
from markov_otel.server.gate import IngestGate

SLOTS = 2
WAIT = 20.0  # seconds to wait for the server to have taken the held slots (not a timing claim)


@pytest.fixture(params=PARSERS)
def gated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A server of SLOTS slots, under each of uvicorn's HTTP parsers (their flow control
    differs: a body half sent must hold no slot under either)."""
    args = ["--max-concurrent-ingest", str(SLOTS), "--http", request.param]
    server = Backend(tmp_path / "gated", extra_args=args)
    yield server
    server.stop()


def hold(server: Backend, body: bytes, sent: int | None = None) -> socket.socket:
    """A POST /v1/metrics whose body stops after `sent` bytes (half by default), then waits."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2 if sent is None else sent])
    return sock


def finish(sock: socket.socket, body: bytes, sent: int | None = None) -> int:
    """Send the rest of a held body; the answer's status code."""
    sock.sendall(body[len(body) // 2 if sent is None else sent :])
    reply = b""
    while b"\r\n" not in reply:
        reply += sock.recv(4096)
    sock.close()
    return int(reply.split(b" ", 2)[1])


def test_bodies_on_their_way_in_hold_no_slot(gated: Backend) -> None:
    """With more half-sent bodies than slots, other bodies and registrations go in at once;
    finished, the held bodies are stored too: every point once."""
    rid = new_id()
    bodies = [metrics_json_bytes(rid, series(f"held{i}", 50)) for i in range(SLOTS + 2)]
    socks = [hold(gated, body) for body in bodies]
    headers = {**gated.headers, "Content-Type": "application/x-protobuf"}
    for step in range(5):
        body = metrics_protobuf(rid, [("z", step, 1.0, 1)])
        answer = httpx.post(gated.url + "/v1/metrics", content=body, headers=headers, timeout=WAIT)
        assert answer.status_code == 200
    register = httpx.post(
        gated.url + "/api/v1/recordings", json={"recording_id": new_id()}, headers=gated.headers
    )
    assert register.status_code == 201
    assert [finish(sock, body) for sock, body in zip(socks, bodies, strict=True)] == [200] * (
        SLOTS + 2
    )
    recording = httpx.get(f"{gated.url}/api/v1/recordings/{rid}", headers=gated.headers).json()
    assert recording["points"] == 50 * (SLOTS + 2) + 5


def test_a_body_past_the_bytes_arriving_bound_gets_503_with_retry_after(tmp_path: Path) -> None:
    """Bodies on their way in are bounded in bytes (4 bodies of --max-body-bytes): one that
    would pass the bound is refused before it is read, with Retry-After; nothing of it stored."""
    server = Backend(tmp_path / "small", extra_args=["--max-body-bytes", "3000"])
    try:
        rid = new_id()
        bodies = [metrics_json_bytes(rid, series(f"k{i}", 19)) for i in range(5)]
        assert all(2450 < len(b) <= 3000 for b in bodies), [len(b) for b in bodies]
        socks = [hold(server, body, len(body) - 1) for body in bodies[:4]]  # 4 x ~2.5 kB in
        headers = {**server.headers, "Content-Type": "application/json"}
        deadline = time.monotonic() + WAIT
        while True:  # the held bodies' first halves reach the server as their headers land
            answer = httpx.post(server.url + "/v1/metrics", content=bodies[4], headers=headers)
            if answer.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "bytes of request bodies are arriving" in answer.json()["message"]
        finished = [
            finish(sock, body, len(body) - 1) for sock, body in zip(socks, bodies[:4], strict=True)
        ]
        assert finished == [200] * 4
        recording = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers)
        assert recording.json()["points"] == 4 * 19
    finally:
        server.stop()


def test_a_full_gate_answers_503_with_retry_after_naming_the_bound() -> None:
    """Every slot busy: the next body gets 503, Retry-After 1, and the option's name."""
    gate = IngestGate(SLOTS)

    async def fill() -> ApiError:
        async with gate.slot("a"), gate.slot("b"):
            try:
                async with gate.slot("c"):
                    pass
            except ApiError as exc:
                return exc
        raise AssertionError("a third body got a slot")

    refused = run_alone(fill())
    assert refused.status == 503 and refused.headers == {"Retry-After": "1"}
    assert "--max-concurrent-ingest" in refused.reason


@pytest.mark.parametrize("bad", [0, -1, True])
def test_the_bound_must_be_a_positive_integer(tmp_path: Path, bad: int) -> None:
    """max_concurrent_ingest=0 (or negative, or a bool) is refused before anything opens."""
    with pytest.raises(ConfigError, match="max_concurrent_ingest"):
        create_app(db=str(tmp_path / "x.db"), tokens=[], max_concurrent_ingest=bad)
    assert not (tmp_path / "x.db").exists()
