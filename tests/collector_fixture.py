"""The real collector (markov-otelcol, built by collector-config/build.sh) for tests.

`otelcol_binary()` finds it: $MARKOV_OTELCOL, else the path build.sh would print for the current
manifest. Without it a test skips, except in CI (CI=true), where a missing binary fails: .ci/run
builds it, so its absence there is a broken build, not a machine without Go.

`Collector` runs collector-config/otel-collector.yaml as shipped, with its environment variables
pointed at this test (free loopback ports, a runs dir, a storage dir, the test backend) and one
extra config file that only moves the collector's own telemetry to a free port, where
`Collector.metric()` reads its counters (points sent, queue size).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "collector-config" / "otel-collector.yaml"
MANIFEST = REPO / "collector-config" / "builder-config.yaml"
BUILD_SH = REPO / "collector-config" / "build.sh"
FEATURE_GATES = "--feature-gates=stanza.synchronousLogEmitter"
START_TIMEOUT = 60.0

T = TypeVar("T")


def built_release() -> str:
    """The release build.sh installs the builder at (`release=vX.Y.Z`)."""
    match = re.search(r"^release=(v[0-9.]+)", BUILD_SH.read_text(encoding="utf-8"), re.M)
    assert match, "collector-config/build.sh names no release="
    return match.group(1)


def cached_binary() -> Path:
    """Where build.sh puts the binary of the current manifest (whether or not it is there)."""
    digest = hashlib.sha256(MANIFEST.read_bytes()).hexdigest()[:16]
    cache = os.environ.get("MARKOV_OTELCOL_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "markov-otelcol"
    )
    return Path(cache) / built_release() / digest / "markov-otelcol"


def otelcol_binary() -> Path:
    """The collector binary, or skip (fail in CI) with the command that builds it."""
    named = os.environ.get("MARKOV_OTELCOL")
    path = Path(named) if named else cached_binary()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    why = f"no collector binary at {path}: run `bash collector-config/build.sh` (needs Go)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; .ci/run builds it and exports MARKOV_OTELCOL")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], seconds: float = 60.0) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(0.2)


class Collector:
    """markov-otelcol running the shipped config, reconfigured only through its variables."""

    def __init__(
        self,
        workdir: Path,
        *,
        backend_url: str,
        token: str,
        runs_dir: Path,
        config: Path = CONFIG,
    ) -> None:
        self.binary = otelcol_binary()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.runs_dir = runs_dir
        self.ports = {
            name: free_port() for name in ("grpc", "http", "prometheus", "health", "telemetry")
        }
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir),
            "MARKOV_RUNS_DIR": str(runs_dir),
            "MARKOV_COLLECTOR_STORAGE": str(workdir / "storage"),
            "MARKOV_ENDPOINT": backend_url,
            "MARKOV_API_KEY": token,
            "MARKOV_COLLECTOR_OTLP_GRPC": f"127.0.0.1:{self.ports['grpc']}",
            "MARKOV_COLLECTOR_OTLP_HTTP": f"127.0.0.1:{self.ports['http']}",
            "MARKOV_COLLECTOR_PROMETHEUS": f"127.0.0.1:{self.ports['prometheus']}",
            "MARKOV_COLLECTOR_HEALTH": f"127.0.0.1:{self.ports['health']}",
            # No Jaeger here: a port nobody listens on (the traces exporter retries, then drops).
            "MARKOV_JAEGER_ENDPOINT": f"127.0.0.1:{free_port()}",
        }
        self.telemetry = workdir / "telemetry.yaml"
        self.telemetry.write_text(
            "service:\n  telemetry:\n    metrics:\n      level: detailed\n      readers:\n"
            "        - pull:\n            exporter:\n              prometheus:\n"
            f"                host: 127.0.0.1\n                port: {self.ports['telemetry']}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start()

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def otlp_grpc(self) -> str:
        return f"http://127.0.0.1:{self.ports['grpc']}"

    @property
    def prometheus_target(self) -> str:
        return f"127.0.0.1:{self.ports['prometheus']}"

    def start(self) -> None:
        """Start the binary and wait for health_check to answer 200."""
        self.starts += 1
        log = (self.workdir / "collector.log").open("ab")
        args = [str(self.binary), f"--config={self.config}", f"--config={self.telemetry}"]
        self.process = subprocess.Popen(
            [*args, FEATURE_GATES], stdout=log, stderr=log, env=self.env, cwd=self.workdir
        )
        log.close()
        wait_for("the collector's health check", self._healthy, START_TIMEOUT)

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"collector exited with {self.process.returncode}:\n{self.log()}")
        try:
            url = f"http://127.0.0.1:{self.ports['health']}/"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def log(self) -> str:
        path = self.workdir / "collector.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the collector's own metric `name` over series matching `labels` (0: none)."""
        url = f"http://127.0.0.1:{self.ports['telemetry']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0.0
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not go; the exit code of a clean stop."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
