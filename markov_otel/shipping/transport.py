"""The Markov backend client: where to send (`Target`), one call (`BackendClient`), the policy.

Every call answers JSON or raises `Retry` (weather: 408, 425, 429, 5xx, resets, timeouts; with
the Retry-After delay when the backend gave one) or `Refused` (retrying cannot fix it; with the
HTTP status). A call's timeout is a deadline for the whole call: a peer that accepts the
connection and trickles its answer one byte at a time is cut off when it passes, because a
watchdog shuts the call's socket (requests' own timeout only bounds each read). The sender
thread that ships a run dir is in `sender.py`.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import requests
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from markov_otel.config import Settings, redact_url
from markov_otel.errors import ConfigError
from markov_otel.otel.resource import iso_time
from markov_otel.shipping.spool import ACKS_FILE, SIGNALS, strict_json

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
LINE_REFUSALS = frozenset({400, 413, 415, 422})
"""Refusals of one body for its content: that line is set aside and the rest flows on. Other
refusals (401, 403, 404 …) are about the token or the endpoint and pause sending."""
BACKOFF_BASE, BACKOFF_CAP = 0.2, 10.0


REGISTRATION_FIELDS = (
    "recording_id", "name", "project_id", "notes", "dataset_id", "model_class", "model_id",
    "metadata", "hyper_parameters",
)  # fmt: skip


def registration_body(info: Mapping[str, Any]) -> dict[str, Any]:
    """POST /api/v1/recordings from a recording.json-shaped mapping (docs/protocol.md)."""
    body = {key: info.get(key) for key in REGISTRATION_FIELDS} | _times(info)
    return strict_json(body)  # NaN and ±inf as the protocol's strings: requests refuses them


def patch_body(info: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH that brings a recording up to date with a recording.json-shaped mapping: the
    full values, including those too large to ride on every batch's resource."""
    fields = ("hyper_parameters", "summary", "status", "notes", "metadata")
    return strict_json({key: info.get(key) for key in fields} | _times(info))


def _times(info: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: iso_time(info[key])
        for key in ("started_at", "ended_at")
        if isinstance(info.get(key), (int, float))
    }


class Retry(Exception):
    """Weather: try again after `delay` seconds (None: use backoff). `unreachable`: nobody took
    the connection (refused, no route, unknown host), as opposed to a backend that answered
    slowly or with 5xx; waiting long for it only makes sense while it answers."""

    def __init__(self, reason: str, delay: float | None = None, *, unreachable: bool = False):
        super().__init__(reason)
        self.delay = delay
        self.unreachable = unreachable


class Refused(Exception):
    """The backend refused in a way retrying cannot fix (bad token, malformed batch …)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


def backoff(attempt: int, *, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, capped."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 16)) * (0.5 + rng())


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Target:
    """Where a sender ships a run dir: the Markov backend, or the user's OTLP/HTTP collector."""

    base: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify: str | bool = True
    signals: tuple[str, ...] = SIGNALS
    paths: Mapping[str, str] = field(default_factory=dict)  # signal -> path or full URL
    acks: str = ACKS_FILE
    registers: bool = True  # the Markov backend takes registration and PATCHes
    grpc: bool = False  # the collector's OTLP/gRPC port instead of HTTP (export_points only)

    @classmethod
    def markov(cls, settings: Settings) -> Target:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        return cls(settings.endpoint.rstrip("/"), headers, settings.ca_bundle or True)

    @classmethod
    def otlp_points(cls, settings: Settings) -> Target:
        """The collector's OTLP metrics endpoint, from the standard OTEL_* variables: OTLP/HTTP
        (JSON lines as they are) or, with OTEL_EXPORTER_OTLP_PROTOCOL=grpc, OTLP/gRPC."""
        env = os.environ
        grpc = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc"
        url = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        if not url:
            base = settings.otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not base:
                raise ConfigError(
                    "export_points needs an OTLP endpoint: OTEL_EXPORTER_OTLP_ENDPOINT"
                )
            url = base.rstrip("/") if grpc else base.rstrip("/") + "/v1/metrics"
        raw = env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
        return cls(
            url,
            _parse_headers(raw or ""),
            settings.ca_bundle or True,
            ("metrics",),
            {"metrics": url},
            "acks-otlp.json",
            registers=False,
            grpc=grpc,
        )


def _parse_headers(raw: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS: `k=v,k2=v2`, URL-encoded values."""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k).strip(): unquote(v).strip() for k, v in pairs}


class Client(Protocol):
    """What a sender ships through: `BackendClient` (HTTP), or `otlp_grpc.GrpcPointsClient`."""

    base: str

    def call(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any: ...

    def close(self) -> None: ...


def client_for(target: Target, timeout: float) -> Client:
    """The client that speaks the target's protocol."""
    if target.grpc:
        from markov_otel.shipping.otlp_grpc import GrpcPointsClient  # grpc loads only if used

        return GrpcPointsClient(target, timeout)
    return BackendClient(target, timeout)


class BackendClient:
    """One requests.Session to a target; every call returns JSON or raises Retry/Refused."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.timeout = timeout
        self.base = self._url = redact_url(target.base)  # what requests use and messages name
        self._sockets = _Sockets()
        self.session = requests.Session()
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, _DeadlineAdapter(self._sockets))
        self.session.headers["User-Agent"] = "markov-otel"
        self.session.headers.update(target.headers)
        user = urlsplit(target.base)
        if user.username is not None and "Authorization" not in target.headers:
            # https://user:pw@host (e.g. a reverse proxy's basic auth): as an explicit auth, so
            # it never replaces the API key's bearer header, nor shows up in a message.
            self.session.auth = (unquote(user.username), unquote(user.password or ""))
        self.session.verify = self.verify = target.verify

    def call(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One request, bounded as a whole by `timeout` seconds (default: the client's); its
        JSON, or with `raw` the response itself (a body that is not JSON, e.g. bytes)."""
        url = path if "://" in path else self._url + path
        limit = timeout or self.timeout
        watchdog = threading.Timer(limit, self._sockets.shut)
        watchdog.daemon = True
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        watchdog.start()
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the
            # session's verify, which would silently drop the ca_bundle setting.
            response = self.session.request(
                method, url, timeout=limit, verify=self.verify, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise _tls_failure(self.base, exc) from exc
        except requests.exceptions.InvalidJSONError as exc:  # ours to fix, not weather: no retry
            raise Refused(f"the body of {method} {path} is not JSON: {exc}", 0) from exc
        except requests.RequestException as exc:
            late = " (no complete answer within the deadline)" if watchdog.finished.is_set() else ""
            failed = _connection_failure(exc)
            if failed:
                raise Retry(f"cannot connect to {self.base} ({failed})", unreachable=True) from exc
            raise Retry(f"{type(exc).__name__} talking to {self.base}{late}") from exc
        finally:
            watchdog.cancel()
            watchdog.join()
            otel_context.detach(token)
        if response.status_code in RETRY_STATUS:
            raise Retry(
                f"HTTP {response.status_code} from {self.base}{path}",
                retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            raise Refused(
                f"HTTP {response.status_code} from {self.base}{path}: {response.text[:200]}",
                response.status_code,
            )
        if raw:
            return response
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}

    def close(self) -> None:
        self.session.close()


def _connection_failure(exc: requests.RequestException) -> str | None:
    """Why the connection itself failed (refused, no route, unknown host: nobody is listening),
    or None. A connect timeout is not one: a slow or filtered network may still get through."""
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.Timeout):
        return None
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if not isinstance(reason, NewConnectionError):
        return None
    cause = reason.__cause__ or reason.__context__
    return str(getattr(cause, "strerror", None) or "connection failed")


class _Sockets:
    """The live sockets of one client, so that a deadline can shut them from another thread."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)

    def shut(self) -> None:
        """End every blocked read and write now; the pool replaces these connections."""
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections register their sockets with `_Sockets`."""

    def __init__(self, sockets: _Sockets) -> None:
        self._sockets = sockets
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        sockets = self._sockets

        class Connection(HTTPConnection):
            def connect(self) -> None:
                super().connect()
                sockets.add(self.sock)

        class TLSConnection(HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                sockets.add(self.sock)

        class Pool(HTTPConnectionPool):
            ConnectionCls = Connection

        class TLSPool(HTTPSConnectionPool):
            ConnectionCls = TLSConnection

        self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}


_CERT_FAILED = re.compile(r"certificate verify failed:?\s*([^(')\"]*)")


def _tls_failure(base: str, exc: requests.exceptions.SSLError) -> Exception:
    """An unverifiable certificate is a refusal (retrying cannot fix it); other TLS trouble is
    weather."""
    found = _CERT_FAILED.search(str(exc))
    if found is None:
        return Retry(f"{type(exc).__name__} talking to {base}")
    reason = found.group(1).strip() or "certificate verify failed"
    return Refused(
        f"the TLS certificate of {base} could not be verified ({reason}); if a private CA signs "
        "it, point ca_bundle at that CA (MARKOV_CA_BUNDLE=PATH or `mkv config set ca_bundle PATH`)"
    )
