"""Debian's nginx as a plain process in front of test backends, configured by the repo's own
`collector-config/nginx-markov.conf` (only its "# site:" lines are replaced), with TLS.

Never the system service: its own prefix, config, pid, logs and temp dirs under a test
directory, `daemon off`, on a free loopback port, stopped by its process id.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from tls_certificate import self_signed

REPO = Path(__file__).resolve().parents[2]
SITE_CONFIG = REPO / "collector-config" / "nginx-markov.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT = 20.0

_SITE_LINE = re.compile(r"^(\s*)\S.*# site: (\S+)\s*$")
_LOG_LINE = re.compile(
    r'^(?P<time>\S+) \S+ "(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) \d+ '
    r'rt=\S+ up="(?P<up>[^"]*)" us="(?P<us>[^"]*)"$'
)


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(text: str, lines: Mapping[str, Sequence[str]]) -> str:
    """`text` with each group of "# site: NAME" lines replaced by `lines[NAME]` (indented
    alike); every NAME in the file must be given, and every NAME given must be in the file."""
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        found = _SITE_LINE.match(line)
        if found is None:
            out.append(line)
            continue
        indent, name = found.groups()
        assert name in lines, f"{SITE_CONFIG} has a site line the test does not set: {line!r}"
        if name not in seen:
            out.extend(indent + given for given in lines[name])
            seen.add(name)
    assert seen == set(lines), f"site lines missing from {SITE_CONFIG}: {set(lines) - seen}"
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Request:
    """One line of the access log: what a client asked, what it got, which servers nginx
    tried (more than one: it moved on) and what each answered ("502" when the server died)."""

    method: str
    path: str
    status: int
    upstreams: tuple[str, ...]
    upstream_statuses: tuple[str, ...]


class Nginx:
    """nginx on https://127.0.0.1:<port> (and a plain-http port that redirects), proxying to
    `upstreams` ("127.0.0.1:PORT" each) with the repo's site config."""

    def __init__(
        self, directory: Path, upstreams: Sequence[str], port: int, *, fail_timeout: int = 10
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = port, free_port()
        self.cert, key = self_signed(self.dir)
        self.access_log = self.dir / "access.log"
        site = site_config(
            SITE_CONFIG.read_text(),
            {
                "upstream": [
                    f"server {a} max_fails=1 fail_timeout={fail_timeout}s;" for a in upstreams
                ],
                "listen-http": [f"listen 127.0.0.1:{self.http_port};"],
                "listen": [f"listen 127.0.0.1:{self.port} ssl;"],
                "certificate": [f"ssl_certificate {self.cert};"],
                "key": [f"ssl_certificate_key {key};"],
                "access-log": [f"access_log {self.access_log} markov;"],
            },
        )
        (self.dir / "markov.conf").write_text(site)
        (self.dir / "nginx.conf").write_text(self._main_config())
        self.process: subprocess.Popen[bytes] | None = None
        self._start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _main_config(self) -> str:
        """What Debian's /etc/nginx/nginx.conf would be, kept inside the test directory."""
        d = self.dir
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / "temp" / temp).mkdir(parents=True, exist_ok=True)
        # As root, nginx's workers would switch to "nobody", who cannot read a test directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return (
            f"daemon off;\n{user}worker_processes 1;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log notice;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    client_body_temp_path {d}/temp/body;\n    proxy_temp_path {d}/temp/proxy;\n"
            f"    fastcgi_temp_path {d}/temp/fastcgi;\n    uwsgi_temp_path {d}/temp/uwsgi;\n"
            f"    scgi_temp_path {d}/temp/scgi;\n"
            f"    include {d}/markov.conf;\n"
            "}\n"
        )

    def _start(self) -> None:
        args = [NGINX, "-p", f"{self.dir}/", "-c", str(self.dir / "nginx.conf")]
        args += ["-e", str(self.dir / "error.log")]
        log = (self.dir / "stderr.log").open("ab")
        # A session of its own: stop() can reach the worker too if the master is gone.
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.log()}")
            try:
                answer = requests.get(self.url + "/healthz", verify=str(self.cert), timeout=2)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer /healthz in {START_TIMEOUT}s: {self.log()}")

    def log(self) -> str:
        """nginx's error log and stderr so far."""
        parts = [self.dir / "error.log", self.dir / "stderr.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def requests(self) -> list[Request]:
        """Every request in the access log so far."""
        if not self.access_log.exists():
            return []
        found = []
        for line in self.access_log.read_text().splitlines():
            parsed = _LOG_LINE.match(line)
            assert parsed is not None, f"access log line not in the markov format: {line!r}"
            found.append(
                Request(
                    method=parsed["method"],
                    path=parsed["path"],
                    status=int(parsed["status"]),
                    upstreams=tuple(parsed["up"].split(", ")),
                    upstream_statuses=tuple(parsed["us"].split(", ")),
                )
            )
        return found

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL for the whole session if it lingers."""
        if self.process is None:
            return
        crashed = self.process.poll() is not None  # its worker may be left behind
        if not crashed:
            self.process.send_signal(signal.SIGTERM)  # the master stops its worker first
            try:
                self.process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the session nginx's master led
        self.process.wait(timeout=10)
