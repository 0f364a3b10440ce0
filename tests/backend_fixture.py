"""pytest plugin: the reference backend in a subprocess (`backend`), `postgres_url`, and the
ways tests reach a backend (`dead_endpoint()`, `online_recorder()`).

Load it with `pytest_plugins = ["backend_fixture"]`. The backend is the real server
(`python -m markov_otel.server --port 0 --port-file …`) on a SQLite file under `tmp_path`, with a
token (`token=""` starts it with `--open` instead); `.kill()` sends SIGKILL, `.restart()` brings
it back on the same port and database.

A backend that fails to start is killed before the error is raised, and any backend a test
leaves running is stopped when the test ends (`_no_backend_outlives_its_test`). The fixtures'
backends are let go (`let_go()`: SIGTERM, no wait), and waited for at the next test's end or the
session's, so uvicorn's shutdown (~0.2 s, ~300 times a run) overlaps the next test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "MARKOV_TEST_POSTGRES_URL"
# Generous: a loaded CI machine (2 cores shared) can take many seconds to import the server.
START_TIMEOUT = 60.0
_STARTED: list[Backend] = []  # every backend started, for _no_backend_outlives_its_test
_LET_GO: list[subprocess.Popen[bytes]] = []  # told to stop (SIGTERM), not yet waited for


class Backend:
    """A running `python -m markov_otel.server` subprocess and how to reach it."""

    def __init__(
        self,
        workdir: Path,
        *,
        token: str = "test-token",
        db: str | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.db = db or f"sqlite:///{workdir / 'backend.db'}"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def records(self, recording_id: str, key: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Every stored point of one key, by step (GET …/records); [] for an unknown recording."""
        import requests

        answer = requests.get(
            f"{self.url}/api/v1/recordings/{recording_id}/records",
            params={"key": key}, headers=self.headers, timeout=timeout,
        )  # fmt: skip
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return list(answer.json())

    def start(self) -> None:
        """Start the server (on `self.port`, 0 the first time) and wait until it answers."""
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "markov_otel.server", "--port", str(self.port)]
        args += ["--port-file", str(port_file), "--db", self.db, *self.extra_args]
        args += ["--token", self.token] if self.token else ["--open"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("MARKOV_SERVER_TOKENS", None)
        env.update(self.env)
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=self.workdir)
        log.close()
        _STARTED.append(self)
        try:
            self.port = int(self._wait_for(port_file))
            self._wait_healthy()
        except BaseException:
            self.kill()  # a server that never came up is not left running
            raise

    def _wait_for(self, port_file: Path) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if port_file.exists():
                return port_file.read_text().strip()
            self._check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"backend wrote no port file in {START_TIMEOUT}s: {self.log()}")

    def _wait_healthy(self) -> None:
        """Ask /healthz until it answers 200 or START_TIMEOUT passes; a refused connection, a
        read timeout (a worker still importing) or an error status are all asked again."""
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while (left := deadline - time.monotonic()) > 0:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=min(5, left)) as answer:
                    if answer.status == 200:
                        return
                    last = answer.status
            except OSError as exc:  # refused, a read timeout, an error status: all OSErrors
                last = exc
            self._check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"backend not healthy in {START_TIMEOUT}s ({last}): {self.log()}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"backend exited with {self.process.returncode}: {self.log()}")

    def log(self) -> str:
        """The server's stdout and stderr so far."""
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no flush)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Kill if running, then start again on the same port and database."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate politely (SIGTERM), SIGKILL if it does not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        _reap([self.process])

    def let_go(self) -> None:
        """SIGTERM without waiting: for a fixture's teardown, after which nothing reads the
        server's files or port. `_no_backend_outlives_its_test` waits for it a test later."""
        with contextlib.suppress(ValueError):
            _STARTED.remove(self)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            _LET_GO.append(self.process)


def _reap(processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for servers told to stop; SIGKILL one that has not gone in 10 s."""
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(autouse=True)
def _no_backend_outlives_its_test() -> Iterator[None]:
    """Stop every backend a test started and left running (a failed assert before its
    `finally`, a second Backend(...) that raised after a first had started), and wait for the
    ones let go before this test began: they have had the whole test to exit."""
    earlier = list(_LET_GO)
    yield
    while _STARTED:
        _STARTED.pop().stop()
    _reap(earlier)
    del _LET_GO[: len(earlier)]


@pytest.hookimpl(tryfirst=True)  # before leftovers.py counts what still runs
def pytest_sessionfinish(session: pytest.Session) -> None:
    _reap(_LET_GO)
    _LET_GO.clear()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """The reference backend on 127.0.0.1:<free port>, SQLite under tmp_path, one token."""
    server = Backend(tmp_path / "backend")
    try:
        yield server
    finally:
        server.let_go()


PARSERS = ("h11", "httptools")
"""uvicorn's HTTP/1.1 parsers (`mkv serve --http`): tests of what goes over the wire run on
both, since `auto` takes httptools where it is installed (the [server] extra) and h11 elsewhere."""


@pytest.fixture(params=PARSERS)
def parsed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backend (SQLite, one token) under each of uvicorn's HTTP parsers."""
    server = Backend(tmp_path / f"backend-{request.param}", extra_args=["--http", request.param])
    try:
        yield server
    finally:
        server.let_go()


@pytest.fixture
def postgres_url() -> str:
    """A PostgreSQL URL for tests (`eval "$(bash .ci/postgres.sh)"`); skips when unset."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f'{POSTGRES_ENV} is not set (eval "$(bash .ci/postgres.sh)" to start one)')
    return url


@contextlib.contextmanager
def schema_of_its_own(base: str, prefix: str) -> Iterator[str]:
    """A URL of the PostgreSQL at `base` whose tables live in a new schema (`prefix_<random>`),
    dropped with all it holds afterwards: a test's tables and locks touch no other test's."""
    import psycopg  # the server extra's: only the PostgreSQL tests need it

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def own_schema(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL on a schema of this test's own (schema_of_its_own)."""
    with schema_of_its_own(postgres_url, "own") as url:
        yield url


def dead_endpoint() -> str:
    """A loopback URL on a port nobody listens on (bound, then closed): "backend down"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def online_recorder(endpoint: str, token: str, name: str = "online", **kwargs: Any) -> Any:
    """An ONLINE recorder with short intervals and timeouts, so fault tests finish quickly."""
    from markov_otel import ExperimentRecorder, RecordingMode

    options: dict[str, Any] = {
        "recording_mode": RecordingMode.ONLINE,
        "endpoint": endpoint,
        "api_key": token,
        "batch_size": 100,
        "batch_processing_interval": 0.05,
        "register_batch_timeout": 2.0,
        "sync_data_timeout": 20.0,
        **kwargs,
    }
    return ExperimentRecorder(name, **options)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backend subprocess on SQLite, then on PostgreSQL (skipped without a database)."""
    db = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = Backend(tmp_path / f"backend-{request.param}", db=db)
    try:
        yield running
    finally:
        running.let_go()
