"""The Markov backend client: retry policy, and the sender thread that ships the spool.

Spool first, send second, mark acked: the sender reads lines from the run dir, POSTs each one
as-is (it is already OTLP-JSON) with an Idempotency-Key naming that line, and records the ack in
acks.json, so a restart or `mkv sync` resumes where it stopped and never duplicates a point.
Weather is retried (408, 429, 5xx, resets, timeouts: exponential backoff with jitter,
Retry-After honoured); a refusal retrying cannot fix pauses sending, says why once, and leaves
the data on disk for `mkv sync`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import requests
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

from markov_otel.config import Settings
from markov_otel.errors import BackendError, ConfigError
from markov_otel.spool import ACKS_FILE, SIGNALS, Spool
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE, BACKOFF_CAP = 0.2, 10.0


REGISTRATION_FIELDS = (
    "recording_id", "name", "project_id", "notes", "dataset_id", "model_class", "model_id",
    "metadata", "hyper_parameters",
)  # fmt: skip


def registration_body(info: Mapping[str, Any]) -> dict[str, Any]:
    """POST /api/v1/recordings from a recording.json-shaped mapping (docs/protocol.md)."""
    return {key: info.get(key) for key in REGISTRATION_FIELDS}


class Retry(Exception):
    """Weather: try again after `delay` seconds (None: use backoff)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Refused(Exception):
    """The backend refused in a way retrying cannot fix (bad token, malformed batch …)."""


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

    @classmethod
    def markov(cls, settings: Settings) -> Target:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        return cls(settings.endpoint.rstrip("/"), headers, settings.ca_bundle or True)

    @classmethod
    def otlp_points(cls, settings: Settings) -> Target:
        """The collector's OTLP/HTTP metrics endpoint, from the standard OTEL_* variables."""
        env = os.environ
        if env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
            raise ConfigError(
                "export_points sends OTLP/HTTP JSON; set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
                "(the collector's port 4318) or turn export_points off"
            )
        url = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        if not url:
            base = settings.otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not base:
                raise ConfigError(
                    "export_points needs an OTLP endpoint: OTEL_EXPORTER_OTLP_ENDPOINT"
                )
            url = base.rstrip("/") + "/v1/metrics"
        raw = env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
        return cls(
            url,
            _parse_headers(raw or ""),
            settings.ca_bundle or True,
            ("metrics",),
            {"metrics": url},
            "acks-otlp.json",
            registers=False,
        )


def _parse_headers(raw: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS: `k=v,k2=v2`, URL-encoded values."""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k).strip(): unquote(v).strip() for k, v in pairs}


class BackendClient:
    """One requests.Session to a target; every call returns JSON or raises Retry/Refused."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.base, self.timeout = target.base, timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "markov-otel"
        self.session.headers.update(target.headers)
        self.session.verify = self.verify = target.verify

    def call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        url = path if "://" in path else self.base + path
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the
            # session's verify, which would silently drop the ca_bundle setting.
            response = self.session.request(
                method, url, timeout=timeout or self.timeout, verify=self.verify, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise _tls_failure(self.base, exc) from exc
        except requests.RequestException as exc:
            raise Retry(f"{type(exc).__name__} talking to {self.base}") from exc
        finally:
            otel_context.detach(token)
        if response.status_code in RETRY_STATUS:
            raise Retry(
                f"HTTP {response.status_code} from {self.base}{path}",
                retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            raise Refused(
                f"HTTP {response.status_code} from {self.base}{path}: {response.text[:200]}"
            )
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}

    def close(self) -> None:
        self.session.close()


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


@dataclass
class Progress:
    """What a sender has done: spool lines acknowledged by the backend."""

    sent_lines: int = 0


class Sender:
    """Ships one run dir to the backend from its own thread (or in the caller's, for sync)."""

    def __init__(
        self,
        spool: Spool,
        target: Target,
        queue: Mapping[str, Any],
        view: Any = None,
        *,
        on_registered: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._spool, self._queue, self._view = spool, queue, view
        self._target = target
        self._client = BackendClient(target, float(queue["register_batch_timeout"]))
        self._on_registered = on_registered
        self._registration: dict[str, Any] | None = None
        self._registered = not target.registers
        self._patch: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._deadline: float | None = None
        self._paused: str | None = None
        self._trouble = SayOnce(log)
        self._attempt = 0
        self.progress = Progress()
        self._thread = threading.Thread(target=self._run, name="markov-sender", daemon=True)

    # -- the recorder's side -------------------------------------------------------------------

    def register(self, body: dict[str, Any]) -> None:
        """Try once now; on weather warn once and let the thread retry."""
        self._registration = body
        try:
            self._register()
        except Refused as exc:  # a 401 at register is not weather: say so once, and pause
            self._refuse(exc)
        except Retry as exc:
            self._warn(
                "register",
                f"markov_otel: cannot register recording "
                f"{body['recording_id']} with {self._client.base} ({exc}); recording "
                "to disk and retrying in the background",
            )

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def update_recording(self, patch: Mapping[str, Any]) -> None:
        with self._lock:
            for key, value in patch.items():
                if key == "alerts":
                    self._patch.setdefault("alerts", []).extend(value)
                elif isinstance(value, dict) and isinstance(self._patch.get(key), dict):
                    self._patch[key].update(value)
                else:
                    self._patch[key] = value
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Send what is left for at most `timeout` seconds; True when everything is acked."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout + 0.2)
        done = not self._thread.is_alive() and self._all_sent()
        if not self._thread.is_alive():
            self._client.close()
        return done

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._queue["batch_processing_interval"])
            self._wake.clear()
            delay = self.pump()
            if self._stopping and (self._finished() or self._past_deadline()):
                return
            if delay:
                self._sleep(delay)

    def pump(self) -> float:
        """One round: register, send unacked lines, PATCH. Returns a retry delay (0: all good)."""
        if self._paused:
            return 0.0
        try:
            if not self._registered:
                self._register()
            for signal in self._target.signals:
                self._send_lines(signal)
            self._send_patch()  # after the batches, whose resources carry an older status
        except Retry as exc:
            self._attempt += 1
            self._warn(
                "retry",
                f"markov_otel: backend trouble ({exc}); data is safe in "
                f"{self._spool.dir}, retrying",
            )
            return exc.delay if exc.delay is not None else backoff(self._attempt)
        except Refused as exc:
            self._refuse(exc)
            return 0.0
        self._attempt = 0
        return 0.0

    def _refuse(self, exc: Refused) -> None:
        """Pause sending and say why, once: retrying cannot fix a refusal."""
        self._paused = str(exc)
        log.error(
            "markov_otel: the backend refused recording %s: %s. The data stays in %s; "
            "fix the cause, then run: mkv sync %s",
            self._spool.dir.name,
            exc,
            self._spool.dir,
            self._spool.dir.name,
        )

    def _register(self) -> None:
        if self._registration is None or self._registered:
            return
        answer = self._client.call(
            "POST", "/api/v1/recordings", json=self._registration, timeout=self._timeout()
        )
        self._registered = True
        if self._on_registered is not None:
            self._on_registered(answer)

    def _send_patch(self) -> None:
        with self._lock:
            patch, self._patch = self._patch, {}
        if not patch:
            return
        rid = self._spool.dir.name
        try:
            self._client.call(
                "PATCH", f"/api/v1/recordings/{rid}", json=patch, timeout=self._timeout()
            )
        except (Retry, Refused):
            self.update_recording(patch)  # keep it for the next round, merged with newer news
            raise

    def _send_lines(self, signal: str) -> None:
        acks = self._spool.read_acks(self._target.acks)
        mark = acks.get(signal, {"lines": 0, "offset": 0})
        rid = self._spool.dir.name
        path = self._target.paths.get(signal, f"/v1/{signal}")
        for line in self._spool.lines(signal, mark["lines"], mark["offset"]):
            if self._past_deadline():
                return
            self._client.call(
                "POST",
                path,
                data=line.data,
                timeout=self._timeout(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"{rid}:{signal}:{line.number}",
                },
            )
            acks[signal] = {"lines": line.number + 1, "offset": line.end}
            self._spool.write_acks(acks, self._target.acks)
            self.progress.sent_lines += 1
            self._attempt = 0  # backoff grows with consecutive failures, not since a clean round
            if signal == "metrics" and self._view is not None:
                self._view.counts["sent"] += line.data.count(b'"timeUnixNano"')

    def _all_sent(self) -> bool:
        acks = self._spool.read_acks(self._target.acks)
        for signal in self._target.signals:
            mark = acks.get(signal, {"lines": 0, "offset": 0})
            if next(iter(self._spool.lines(signal, mark["lines"], mark["offset"])), None):
                return False
        return self._registered and not self._patch

    def _finished(self) -> bool:
        return self._paused is not None or self._all_sent()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _timeout(self) -> float:
        timeout = float(self._queue["register_batch_timeout"])
        if self._deadline is not None:
            timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
        return timeout

    def _sleep(self, delay: float) -> None:
        if self._deadline is not None:
            delay = min(delay, max(0.0, self._deadline - time.monotonic()))
        self._wake.wait(delay)

    def _warn(self, kind: str, message: str) -> None:
        self._trouble.say(kind, logging.WARNING, "%s", message)

    # -- sync (the CLI's side) -----------------------------------------------------------------

    def sync(
        self,
        registration: dict[str, Any],
        patch: Mapping[str, Any],
        *,
        deadline: float | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> Progress:
        """Register, PATCH and send everything now, in this thread; BackendError if it can't."""
        self._registration, self._deadline = registration, deadline
        self.update_recording(patch)
        try:
            return self._sync_rounds(progress)
        finally:
            self._client.close()

    def _sync_rounds(self, progress: Callable[[Progress], None] | None) -> Progress:
        while True:
            delay = self.pump()
            if progress is not None:
                progress(self.progress)
            if self._paused:
                raise BackendError(self._paused)
            if self._all_sent():
                return self.progress
            if self._past_deadline():
                raise BackendError(
                    f"{self._client.base} did not take recording "
                    f"{self._spool.dir.name} in time; run mkv sync again"
                )
            time.sleep(delay or 0.01)
