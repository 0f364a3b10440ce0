"""A real HTTP proxy on 127.0.0.1:0 that fails a seeded fraction of requests in front of a backend.

Faults, drawn per request from `random.Random(seed)` (the sequence of decisions is fixed; which
request gets which depends only on arrival order):

- ``503``: answers 503 without forwarding;
- ``429``: answers 429 with ``Retry-After: 0.1`` without forwarding;
- ``reset``: closes the connection with a TCP RST, without forwarding or answering;
- ``lost``: forwards (the backend stores the batch), then resets instead of answering;
- ``stall``: forwards, then holds the answer for ``stall`` seconds (past the client's timeout).

``die_after=K`` forwards K requests and resets every later one (an upstream that went away).
``scripted={suffix: [fate, …]}`` gives the first requests whose Idempotency-Key ends with
`suffix` those fates in turn (also ``late``: forwarded after ``stall`` seconds, answered; and
``401``: answered 401 without forwarding). ``retry_after`` is the 429's Retry-After.
``counts`` tells what happened, so a test can check that the faults it asked for did occur;
``arrivals`` when each request came, with its Idempotency-Key.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

FAULTS = ("503", "429", "reset", "lost", "stall")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FlakyProxy:
    """`with FlakyProxy(backend.url, faults={"503": 0.1}, seed=1) as proxy: proxy.url`."""

    def __init__(
        self,
        upstream: str,
        *,
        faults: Mapping[str, float] | None = None,
        seed: int = 0,
        stall: float = 1.0,
        die_after: int | None = None,
        scripted: Mapping[str, list[str]] | None = None,
        retry_after: str = "0.1",
    ) -> None:
        unknown = set(faults or {}) - set(FAULTS)
        if unknown or sum((faults or {}).values()) > 1.0:
            raise ValueError(f"faults={faults!r}: kinds are {FAULTS}, rates must sum to <= 1")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = dict(faults or {})
        self.stall = stall
        self.die_after = die_after
        self.scripted = {suffix: list(fates) for suffix, fates in (scripted or {}).items()}
        self.counts: Counter[str] = Counter()
        self.retry_after = retry_after
        self.arrivals: list[tuple[str | None, float]] = []  # (Idempotency-Key, time.monotonic())
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def decide(self, key: str | None = None) -> str:
        """The fate of the next request (its Idempotency-Key): a fault kind, or ``forward``."""
        with self._lock:
            self.arrivals.append((key, time.monotonic()))
            for suffix, fates in self.scripted.items():
                if key is not None and key.endswith(suffix) and fates:
                    fate = fates.pop(0)
                    self.counts[fate] += 1
                    return fate
            if self.die_after is not None and self.counts["forward"] >= self.die_after:
                fate = "reset"
            else:
                draw, fate = self._rng.random(), "forward"
                for kind in FAULTS:
                    rate = self.faults.get(kind, 0.0)
                    if draw < rate:
                        fate = kind
                        break
                    draw -= rate
            self.counts[fate] += 1
            return fate

    def forward(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple:
        """Send one request upstream; (status, reason, headers, body)."""
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            return answer.status, answer.reason, answer.getheaders(), answer.read()
        finally:
            connection.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _handler_for(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like requests.Session expects

        def setup(self) -> None:
            super().setup()  # headers and body go out in two writes: no Nagle delay between
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fate = proxy.decide(self.headers.get("Idempotency-Key"))
            if fate == "late":
                time.sleep(proxy.stall)
            if fate == "reset":
                return self._reset()
            if fate in ("503", "429", "401"):
                extra = {"Retry-After": proxy.retry_after} if fate == "429" else {}
                return self._answer(int(fate), "flaky proxy", extra, b"")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                status, _reason, answer_headers, answer = proxy.forward(
                    self.command, self.path, headers, body
                )
            except OSError:
                return self._answer(502, "upstream unreachable", {}, b"")
            if fate == "lost":
                return self._reset()
            if fate == "stall":
                time.sleep(proxy.stall)
            kept = {k: v for k, v in answer_headers if k.lower() not in _HOP_BY_HOP}
            self._answer(status, "", kept, answer)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        def _answer(
            self, status: int, reason: str, headers: Mapping[str, str], body: bytes
        ) -> None:
            try:
                self.send_response(status, reason or None)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except OSError:  # the client gave up (it timed out on a stall)
                self.close_connection = True

        def _reset(self) -> None:
            """Close with RST (SO_LINGER 0): the client sees a connection reset, no answer."""
            self.close_connection = True
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            except OSError:
                pass

    return Handler
