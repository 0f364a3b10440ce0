"""No client can starve another: bodies trickling in hold no ingest slot and are cut with 408,
and one project cannot hold every slot.

The trickling clients are real sockets sending a body one byte a second; the other project's
client is a real recorder.
"""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import httpx
import pytest
from backend_fixture import PARSERS, Backend, online_recorder
from otlp_bodies import metrics_json_bytes, new_id, series
from own_loop import run_alone

from markov_otel.errors import ConfigError
from markov_otel.server import create_app
from markov_otel.server.bodies import ApiError
from markov_otel.server.gate import IngestGate

BODY_TIMEOUT = 20  # seconds: long enough for project B's whole run to happen meanwhile
CUT_TIMEOUT = 2  # seconds: the body timeout of the test that waits for the cut itself
TRICKLERS = 6


class Trickler(threading.Thread):
    """A POST /v1/metrics whose body arrives a byte a second, `most` bytes at most (then it
    waits for the answer); keeps the status it is answered. `quit` ends it within a second."""

    def __init__(self, port: int, token: str, body: bytes, most: int) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.body, self.most = port, token, body, most
        self.status: int | None = None
        self.sent = 0
        self.started_sending = threading.Event()
        self.quit = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            head = (
                f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
            )
            sock.sendall(head.encode())
            self.started_sending.set()
            for byte in self.body[: self.most]:
                readable, _, _ = select.select([sock], [], [], 1.0)  # the pace: a byte a second
                if self.quit.is_set():
                    return
                if readable:
                    break
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                self.sent += 1
            reply = b""
            while b"\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if reply.startswith(b"HTTP/1.1 "):
                self.status = int(reply.split(b" ", 2)[1])


def trickle(server: Backend, most: int) -> list[Trickler]:
    """TRICKLERS bodies of project A, each sending its first byte by now."""
    body = metrics_json_bytes(new_id(), series("slow", 50), **{"markov.project.id": "proj-a"})
    assert len(body) > most
    tricklers = [Trickler(server.port, "tok-a", body, most) for _ in range(TRICKLERS)]
    for t in tricklers:
        t.start()
    for t in tricklers:
        assert t.started_sending.wait(30)
    return tricklers


def two_projects(tmp_path: Path, parser: str, body_timeout: int) -> Backend:
    return Backend(
        tmp_path / "server",
        extra_args=["--token", "tok-a:proj-a", "--token", "tok-b:proj-b",
                    "--body-timeout", str(body_timeout), "--http", parser],
    )  # fmt: skip


@pytest.mark.parametrize("parser", PARSERS)
def test_project_b_records_300_points_while_six_uploads_of_project_a_trickle(
    tmp_path: Path, parser: str
) -> None:
    """Six bodies of project A arriving a byte a second: project B's recorder registers and
    delivers 300 points, each stored once, while they still trickle (under either of uvicorn's
    parsers). The next test waits for their cut."""
    server = two_projects(tmp_path, parser, BODY_TIMEOUT)
    tricklers = trickle(server, 3 * BODY_TIMEOUT)  # far past the server's cut
    try:
        recorder = online_recorder(
            server.url, "tok-b", "project-b", project_id="proj-b", markov_dir=str(tmp_path / "runs")
        )
        recorder.start()
        for step in range(300):
            recorder.add_record({"loss": 1.0 / (step + 1)})
        recorder.stop()
        assert all(t.status is None for t in tricklers)  # B was done while A still trickled
        got = httpx.get(
            f"{server.url}/api/v1/recordings/{recorder.recording_id}/records",
            params={"key": "loss"},
            headers={"Authorization": "Bearer tok-b"},
        )
        assert [p["step"] for p in got.json()] == list(range(300))  # each exactly once
    finally:
        for t in tricklers:
            t.quit.set()
        for t in tricklers:
            t.join(30)
        server.stop()


@pytest.mark.parametrize("parser", PARSERS)
def test_six_uploads_trickling_a_byte_a_second_are_cut_with_408(
    tmp_path: Path, parser: str
) -> None:
    """Past the body timeout (2 s here), each trickling body is answered 408, long before its
    last byte (under either of uvicorn's parsers). The cut must come while the tricklers still
    send, within 8 body timeouts: room for a loaded machine, and a server that waited ten
    times its timeout fails."""
    server = two_projects(tmp_path, parser, CUT_TIMEOUT)
    most = 8 * CUT_TIMEOUT  # bytes, a second each
    try:
        tricklers = trickle(server, most)
        for t in tricklers:
            t.join(most + 30)
        assert [t.status for t in tricklers] == [408] * TRICKLERS
        assert [t.sent < most for t in tricklers] == [True] * TRICKLERS
    finally:
        server.stop()


def test_one_project_cannot_take_the_last_free_slot() -> None:
    """With 3 slots, a project holding 2 is refused a third (503 naming its share); another
    project still gets the last one."""
    gate = IngestGate(3)

    async def take() -> None:
        async with gate.slot("proj-a"), gate.slot("proj-a"):
            with pytest.raises(ApiError) as refused:
                async with gate.slot("proj-a"):
                    pass
            assert refused.value.status == 503 and "'proj-a'" in refused.value.reason
            async with gate.slot("proj-b"):
                assert gate.busy == 3

    run_alone(take())


@pytest.mark.parametrize(("name", "bad"), [("body_timeout", 0), ("min_body_rate", -1)])
def test_the_body_pace_settings_must_be_positive(tmp_path: Path, name: str, bad: float) -> None:
    """A body timeout or minimum rate of zero or less is refused, naming the setting."""
    with pytest.raises(ConfigError, match=name):
        create_app(db=str(tmp_path / "x.db"), tokens=[], **{name: bad})
