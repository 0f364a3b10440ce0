"""A team's deployment, for real (issue 20, goal 5): Debian's nginx with the repo's site config
(collector-config/nginx-markov.conf, TLS) in front of several mkv serve processes on one
PostgreSQL; recorders send through it while one server process is SIGKILLed mid-transaction.

Both shapes a team deploys are run: separate server processes as nginx's upstreams, and one
`--workers N` server (one upstream, its processes sharing the port).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests
from backend_fixture import Backend, online_recorder
from nginx_proxy import NGINX, SITE_CONFIG, Nginx, Request, free_port
from polling import until

from markov_otel import ExperimentRecorder
from markov_otel.rules import DEFAULT_MAX_BODY_BYTES
from markov_otel.shipping.runs import unsent_lines
from markov_otel.shipping.spool import Spool

PROCESSES = 3
RECORDERS = 4
AFTER_KILL = 1500
"""Records each recorder makes after the kill: sending goes on through the servers left."""
KEYS = ("loss", "accuracy")
ADMIN, WRITER, PROJECT = "team-admin", "team-ci", "vision"
DEADLINE = 60.0


def test_nginx_config_refuses_what_the_server_would_refuse() -> None:
    """The site config's client_max_body_size is the server's default body limit."""
    (size,) = re.findall(r"^\s*client_max_body_size (\d+)m;", SITE_CONFIG.read_text(), re.M)
    assert int(size) << 20 == DEFAULT_MAX_BODY_BYTES


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("shape", ["processes", "workers"])
def test_recorders_through_nginx_store_every_point_once_when_a_server_process_is_killed(
    shape: str, tmp_path: Path, own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four recorders send through nginx (TLS) to three server processes on one PostgreSQL;
    one process is SIGKILLed inside an ingest transaction; every point is stored exactly once."""
    if not Path(NGINX).exists():
        pytest.skip(f"{NGINX} is missing (apt-get install nginx)")
    with deployment(shape, tmp_path, own_database) as (servers, nginx):
        monkeypatch.setenv("MARKOV_CA_BUNDLE", str(nginx.cert))
        training = Training()
        try:
            for i in range(RECORDERS):
                training.add(online_recorder(nginx.url, WRITER, name=f"team-{i}",
                                             project_id=PROJECT, batch_size=200,
                                             sync_data_timeout=DEADLINE))  # fmt: skip
            training.start()
            until(lambda: stored_points(own_database) > 0, "a point in the database", DEADLINE)
            victim = kill_one_inside_a_transaction(server_processes(shape, servers), own_database)
            training.killed.set()
            until(lambda: recovered(shape, servers, victim, nginx),
                  "the deployment to route around the killed process", DEADLINE)  # fmt: skip
            training.recovered.set()  # AFTER_KILL more steps, sent to the servers left
            training.join(DEADLINE)
            assert not training.is_alive() and training.error is None, training.error
            training.stop_recorders()
            assert_every_point_once(nginx, training.recorders, training.steps, own_database)
            dead = address_of(servers, victim) if shape == "processes" else None
            assert_only_weather(nginx.requests(), dead)
            assert_the_edge_holds(nginx)
            report(shape, nginx.requests(), training, victim)
        except BaseException:
            nginx.stop()  # so that the recorders stopped below give up at once, not in 60 s
            raise
        finally:
            training.halt.set()
            if training.is_alive():
                training.join(DEADLINE)
            training.stop_recorders()


@contextlib.contextmanager
def deployment(shape: str, tmp_path: Path, db: str) -> Iterator[tuple[list[Backend], Nginx]]:
    """PROCESSES server processes on `db` (separate, or one `--workers` server) behind nginx;
    every process is stopped on the way out, whatever happened."""
    port = free_port()
    args = ["--token", f"{WRITER}:{PROJECT}", "--public-url", f"https://127.0.0.1:{port}"]
    servers: list[Backend] = []
    nginx: Nginx | None = None
    try:
        if shape == "processes":
            for i in range(PROCESSES):
                servers.append(Backend(tmp_path / f"server-{i}", token=ADMIN, db=db,
                                       extra_args=args))  # fmt: skip
        else:
            workers = ["--workers", str(PROCESSES)]
            servers.append(Backend(tmp_path / "server", token=ADMIN, db=db,
                                   extra_args=[*args, *workers]))  # fmt: skip
        # A dead server is tried again after a second (10 s in the repo's file), so the test
        # sees nginx find it refusing and move the request on within its run.
        upstreams = [f"127.0.0.1:{s.port}" for s in servers]
        nginx = Nginx(tmp_path / "nginx", upstreams, port, fail_timeout=1)
        yield servers, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


class Training(threading.Thread):
    """Records into every recorder at a training loop's pace until AFTER_KILL steps after
    `recovered` is set (or `halt`, when the test gives up); notes the step of `killed`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.recorders: list[ExperimentRecorder] = []
        self.killed, self.recovered, self.halt = (threading.Event() for _ in range(3))
        self.steps = 0
        self.steps_at_kill: int | None = None
        self.steps_at_recovery: int | None = None
        self.error: BaseException | None = None

    def add(self, recorder: ExperimentRecorder) -> None:
        self.recorders.append(recorder)
        recorder.start()

    def stop_recorders(self) -> None:
        for recorder in self.recorders:
            recorder.stop()  # a no-op once stopped

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                if self.steps_at_kill is None and self.killed.is_set():
                    self.steps_at_kill = self.steps
                if self.steps_at_recovery is None and self.recovered.is_set():
                    self.steps_at_recovery = self.steps
                recovery = self.steps_at_recovery
                if recovery is not None and self.steps >= recovery + AFTER_KILL:
                    return
                for recorder in self.recorders:
                    recorder.add_record({"loss": 1.0 / (self.steps + 1), "accuracy": self.steps})
                self.steps += 1
                if self.steps % 10 == 0:
                    time.sleep(0.01)  # a training step's pace: sending spans the kill
        except BaseException as exc:
            self.error = exc


def stored_points(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM points").fetchone()
        except psycopg.errors.UndefinedTable:  # no server has made its tables yet
            return 0
    return int(row[0]) if row else 0


def server_processes(shape: str, servers: Sequence[Backend]) -> list[int]:
    """The pids that serve requests: each server, or the `--workers` server's workers."""
    pids = [s.process.pid for s in servers if s.process is not None]
    if shape == "processes":
        return pids
    workers = []
    for child in psutil.Process(pids[0]).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # a killed one, until it is reaped
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                workers.append(child.pid)
    return workers


def recovered(shape: str, servers: Sequence[Backend], victim: int, nginx: Nginx) -> bool:
    """The deployment has routed around the killed process: uvicorn's supervisor has replaced
    the worker, or nginx found the dead server refusing and moved a request on (and it was
    answered by another)."""
    if shape == "workers":
        alive = server_processes(shape, servers)
        return victim not in alive and len(alive) == PROCESSES
    dead = address_of(servers, victim)
    return any(dead in r.upstreams[:-1] and r.status == 200 for r in nginx.requests())


def address_of(servers: Sequence[Backend], pid: int) -> str:
    """The upstream address of the server process `pid`."""
    (address,) = [f"127.0.0.1:{s.port}" for s in servers if s.process and s.process.pid == pid]
    return address


def kill_one_inside_a_transaction(pids: Sequence[int], db: str) -> int:
    """SIGKILL the first of `pids` seen inside a database transaction (active, or idle in a
    transaction): a batch it holds is neither committed nor answered. Returns its pid."""
    deadline = time.monotonic() + DEADLINE
    with psycopg.connect(db, autocommit=True) as watch:
        pg_port = watch.info.port
        while True:
            ports = {
                c.laddr.port: pid
                for pid in pids
                for c in psutil.Process(pid).net_connections("tcp")
                if c.raddr and c.raddr.port == pg_port
            }
            busy = watch.execute(
                "SELECT client_port FROM pg_stat_activity WHERE client_port = ANY(%s) "
                "AND state IN ('active', 'idle in transaction')",
                [list(ports)],
            ).fetchall()
            if busy:
                victim = ports[busy[0][0]]
                os.kill(victim, signal.SIGKILL)
                return victim
            assert time.monotonic() < deadline, "no server process was seen in a transaction"
            time.sleep(0.002)


def assert_every_point_once(
    nginx: Nginx, recorders: Sequence[ExperimentRecorder], steps: int, db: str
) -> None:
    """Recorded N, stored N: each recorder's every key holds steps 0..N-1 once (read back
    through nginx), its spool has nothing unacknowledged, and the database holds no more."""
    headers = {"Authorization": f"Bearer {ADMIN}"}

    def get(path: str, **params: Any) -> Any:
        answer = requests.get(nginx.url + path, params=params, headers=headers,
                              verify=str(nginx.cert), timeout=DEADLINE)  # fmt: skip
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        return answer.json()

    for recorder in recorders:
        rid = recorder.recording_id
        assert unsent_lines(Spool(recorder.run_dir)) == 0
        assert recorder.experiment_url.startswith(nginx.url + "/"), recorder.experiment_url
        for key in KEYS:
            rows = get(f"/api/v1/recordings/{rid}/records", key=key)
            assert [row["step"] for row in rows] == list(range(steps)), (rid, key)
        recording = get(f"/api/v1/recordings/{rid}")
        assert recording["points"] == steps * len(KEYS)
        assert recording["project_id"] == PROJECT
    assert stored_points(db) == len(recorders) * steps * len(KEYS)


def assert_only_weather(seen: Sequence[Request], dead: str | None) -> None:
    """Every answer nginx gave is a success, or weather a recorder retries: 502 (the server
    died holding the request) or 503 (a server's ingest slots were full). Never a 500, and
    never a 4xx: nothing a recorder sent was refused. With separate processes, every 502 came
    from the one killed (`dead`): the servers left failed nothing."""
    statuses = Counter(r.status for r in seen)
    assert set(statuses) <= {200, 201, 204, 502, 503}, statuses
    if dead is not None:
        failed = [r for r in seen if r.status == 502]
        assert all(r.upstreams == (dead,) for r in failed), failed


def assert_the_edge_holds(nginx: Nginx) -> None:
    """Plain http is redirected to https; a body over the server's limit is refused by nginx
    (413) from its Content-Length alone, before a byte of it is read or proxied."""
    answer = requests.get(f"http://127.0.0.1:{nginx.http_port}/healthz", allow_redirects=False,
                          timeout=DEADLINE)  # fmt: skip
    assert answer.status_code == 301
    assert answer.headers["Location"].startswith("https://")
    trust = ssl.create_default_context(cafile=str(nginx.cert))
    head = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WRITER}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {DEFAULT_MAX_BODY_BYTES + 1}\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=DEADLINE) as raw,
        trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head.encode())
        assert tls.recv(64).startswith(b"HTTP/1.1 413 ")
    until(lambda: any(r.status == 413 for r in nginx.requests()), "a 413 in the log", DEADLINE)
    (refused,) = [r for r in nginx.requests() if r.status == 413]
    assert refused.upstreams == ("-",)  # no server saw it


def report(shape: str, seen: Sequence[Request], training: Training, victim: int) -> None:
    """One line for the test log (pytest -s): what nginx saw around the kill."""
    ingest = [r for r in seen if r.path.startswith("/v1/")]
    moved_on = [r for r in seen if len(r.upstreams) > 1]
    print(
        f"\n[{shape}] {RECORDERS} recorders x {training.steps} steps x {len(KEYS)} keys "
        f"(pid {victim} killed at step {training.steps_at_kill}, routed around by step "
        f"{training.steps_at_recovery}); {len(ingest)} ingest POSTs; answers "
        f"{dict(Counter(r.status for r in seen))}; nginx moved {len(moved_on)} requests on "
        f"({Counter(r.upstream_statuses for r in moved_on)})"
    )
