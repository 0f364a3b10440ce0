"""The sender: ships one run dir to one backend, line by line, from its own thread or for sync.

Spool first, send second, mark acked: the sender reads lines from the run dir, POSTs each one
as-is (it is already OTLP-JSON) with an Idempotency-Key naming that line of this run dir
(`<recording>:<writer>:<signal>:<line>`), and records the ack under that backend in acks.json,
so a restart or `mkv sync` resumes where it stopped and never duplicates a point.

- Two lines are in flight at once (`IN_FLIGHT`), so the backend stores one while the next one
  travels; answers are settled in line order, so acks only ever cover a contiguous prefix, and
  after a failure the lines still in flight are waited for and sent again later (same key: the
  backend answers a replay 200 and stores nothing twice).
- Weather (`Retry`) is retried with exponential backoff and jitter, Retry-After honoured.
- A line the backend refuses for its content (`LINE_REFUSALS`) is set aside with its reason and
  the rest of the run flows on; one larger than the backend's body limit is first sent in parts
  that fit (`<key>.<part>/<parts>`).
- Any other refusal (a bad token) pauses sending, is said once, and leaves the data on disk for
  `mkv sync`.
- Waiting only makes sense while the backend answers: once stop() began, or during a sync, a
  backend that refuses the connection on GIVE_UP_UNREACHABLE attempts in a row is given up on
  at once (the data stays on disk); one that answers 503 or slowly gets the whole timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from markov_otel.errors import BackendError
from markov_otel.extras import serve_step
from markov_otel.otel.encoding import split_metrics_line
from markov_otel.shipping.acks import Acks
from markov_otel.shipping.spool import Spool, SpoolLine
from markov_otel.shipping.transport import (
    LINE_REFUSALS,
    BackendClient,
    Client,
    Refused,
    Retry,
    Target,
    backoff,
    client_for,
)
from markov_otel.shipping.uploads import Uploads
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

IN_FLIGHT = 2
"""Lines POSTed at once: the backend stores one while the next one travels. Lines are immutable
and idempotent (their key names them), and acks still advance in line order: a line is acked
only after every line before it was acked or set aside."""
GIVE_UP_UNREACHABLE = 3
"""Connection failures in a row, once stop() began (or during a sync), that end the waiting."""
UNREACHABLE_RETRY = 0.2
"""Seconds between those attempts while stop() waits: a restarting backend gets a moment."""


@dataclass
class Progress:
    """What a sender has done: spool lines acknowledged by the backend, and set aside."""

    sent_lines: int = 0
    sent_bytes: int = 0  # of the lines sent (with their newlines): what a progress bar shows
    set_aside: int = 0
    resent: int = 0  # set-aside lines stored by --resend-set-aside
    still_set_aside: int = 0
    artifact_bytes: int = 0  # bytes of artifact parts PUT (those the backend did not hold)


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
        self._client = client_for(target, float(queue["register_batch_timeout"]))
        # One client per line in flight: a call's deadline shuts its own client's sockets, so it
        # must never cut the other line's call short.
        self._line_clients = [self._client] + [
            client_for(target, float(queue["register_batch_timeout"])) for _ in range(IN_FLIGHT - 1)
        ]
        self._acks = Acks(spool, target.base, target.acks)
        # Files go to the Markov backend only, after the points (shipping/uploads.py).
        self._uploads = (
            Uploads(spool, self._client, target.base)
            if target.registers and isinstance(self._client, BackendClient)
            else None
        )
        writer = spool.writer_id()
        self._rid = rid = spool.recording_id()
        self._key_prefix = f"{rid}:{writer}:" if writer else f"{rid}:"
        self._max_body: int | None = None  # the backend's body limit, once a 413 asked for it
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
        self._unreachable = 0  # connection failures in a row
        self._quiet = False  # sync: refusals are raised to the caller, not logged
        self._on_line: Callable[[Progress], None] | None = None
        self.progress = Progress()
        self._thread = threading.Thread(target=self._run, name="markov-sender", daemon=True)

    # -- the recorder's side -------------------------------------------------------------------

    def register(self, body: dict[str, Any]) -> None:
        """Try once now (bounded by register_batch_timeout); on weather warn once and let the
        thread retry."""
        self._registration = body
        try:
            self._register()
        except Refused as exc:  # a 401 at register is not weather: say so once, and pause
            self._refuse(exc)
        except Retry as exc:
            self._warn(
                "unreachable" if exc.unreachable else "register",
                f"markov_otel: cannot register recording {body['recording_id']}: {exc}; "
                "recording to disk and retrying in the background",
            )

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def update_recording(self, patch: Mapping[str, Any], *, from_any_rank: bool = False) -> None:
        """PATCH the recording (merged with what is not sent yet). Not to a collector, nor from
        a rank N > 0 of a distributed job unless `from_any_rank` (its failure)."""
        if not self._target.registers and not from_any_rank:
            return
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
        self._unreachable = 0  # count the failures since stop began
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout + 0.2)
        done = not self._thread.is_alive() and self._all_sent()
        if not self._thread.is_alive():
            self._close_clients()
        return done

    def hurry(self) -> None:
        """Stop waiting now: what is unsent stays on disk for `mkv sync`."""
        self._deadline = time.monotonic()
        self._stopping = True
        self._wake.set()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self._queue["batch_processing_interval"])
                self._wake.clear()
                delay = self.pump()
                if self._stopping and (self._finished() or self._past_deadline() or self.gave_up):
                    return
                if delay:
                    self._sleep(delay)
        finally:
            if self._stopping:  # stop() may have given up waiting: close here, not leak
                self._close_clients()

    def pump(self) -> float:
        """One round: register, send unacked lines, PATCH. Returns a retry delay (0: all good)."""
        if self._paused:
            return 0.0
        try:
            if not self._registered:
                self._register()
            for signal in self._target.signals:
                self._send_lines(signal)
            if self._uploads is not None:
                try:
                    if self._uploads.pump(self._timeout, self._past_deadline):
                        self._wake.set()  # more to upload: the next round starts at once
                finally:
                    self.progress.artifact_bytes = self._uploads.sent_bytes
            self._send_patch()  # after the batches, whose resources carry an older status
        except Retry as exc:
            self._attempt += 1
            self._unreachable = self._unreachable + 1 if exc.unreachable else 0
            if not (exc.unreachable and self._quiet):  # a sync that gives up says it itself
                self._warn(
                    "unreachable" if exc.unreachable else "retry",
                    f"markov_otel: backend trouble ({exc}); data is safe in "
                    f"{self._spool.dir}, retrying",
                )
            if exc.unreachable and self._stopping:
                return UNREACHABLE_RETRY
            return exc.delay if exc.delay is not None else backoff(self._attempt)
        except Refused as exc:
            self._unreachable = 0
            self._refuse(exc)
            return 0.0
        self._attempt = self._unreachable = 0
        return 0.0

    @property
    def gave_up(self) -> bool:
        """stop() (or a sync) stopped waiting: the backend refused every connection lately."""
        return self._unreachable >= GIVE_UP_UNREACHABLE and (self._stopping or self._quiet)

    def why_unsent(self) -> str:
        """After stop() returned False: why, in a few words for the warning ('' if unknown)."""
        if self._paused:
            return " (the backend refused it, as said above)"
        if self.gave_up:
            return f" (cannot connect to {self._client.base})"
        return ""

    def _refuse(self, exc: Refused) -> None:
        """Pause sending and say why, once: retrying cannot fix a refusal. A sync raises it to
        its caller instead, which says it (once)."""
        self._paused = str(exc)
        if self._quiet:
            return
        log.error(
            "markov_otel: the backend refused recording %s: %s. The data stays in %s; "
            "fix the cause, then run: mkv sync %s",
            self._rid,
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
        try:
            self._client.call(
                "PATCH", f"/api/v1/recordings/{self._rid}", json=patch, timeout=self._timeout()
            )
        except (Retry, Refused):
            self.update_recording(patch)  # keep it for the next round, merged with newer news
            raise

    # -- lines ---------------------------------------------------------------------------------

    def _send_lines(self, signal: str) -> None:
        """POST the unacked lines, IN_FLIGHT at a time; settle (ack, set aside) in line order."""
        lines, offset = self._acks.mark(signal)
        pending: deque[tuple[SpoolLine, _Call]] = deque()
        try:
            for line in self._spool.lines(signal, lines, offset):
                if self._past_deadline():
                    break
                key = f"{self._key_prefix}{signal}:{line.number}"
                client = self._line_clients[line.number % IN_FLIGHT]  # neighbours differ
                pending.append((line, _Call(self._send_line, signal, line.data, key, client)))
                if len(pending) >= IN_FLIGHT:
                    self._settle(signal, *pending.popleft())
            while pending:
                self._settle(signal, *pending.popleft())
        finally:
            for _, call in pending:  # after a failure: let them end, keep nothing of them
                call.join()

    def _settle(self, signal: str, line: SpoolLine, call: _Call) -> None:
        """The answer to one line: acked, or set aside, or (weather, a pause) raised."""
        try:
            call.result()
        except Refused as exc:
            if exc.status not in LINE_REFUSALS:
                raise
            self._set_aside(signal, line, exc)
        else:
            self._acks.advance(signal, line)
            self.progress.sent_lines += 1
            self.progress.sent_bytes += len(line.data) + 1
            if signal == "metrics" and self._view is not None:
                self._view.counts["sent"] += line.data.count(b'"timeUnixNano"')
        self._save_acks()
        if self._on_line is not None:
            self._on_line(self.progress)
        self._attempt = 0  # backoff grows with consecutive failures, not since a clean round

    def _send_line(self, signal: str, data: bytes, key: str, client: Client | None = None) -> None:
        """POST one line; one the backend finds too large (413) goes in parts that fit."""
        try:
            self._post(signal, data, key, client)
        except Refused as exc:
            if exc.status != 413 or signal != "metrics":
                raise
            parts = split_metrics_line(data, int(self._body_limit(len(data), client) * 0.9))
            if len(parts) < 2:
                raise
            for number, part in enumerate(parts):
                self._post(signal, part, f"{key}.{number}/{len(parts)}", client)

    def _post(self, signal: str, data: bytes, key: str, client: Client | None = None) -> None:
        (client or self._client).call(
            "POST",
            self._target.paths.get(signal, f"/v1/{signal}"),
            data=data,
            timeout=self._timeout(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )

    def _save_acks(self) -> None:
        """Write acks.json. A disk that refuses is weather: the backend has the lines, sending
        goes on from the marks in memory, and a later sync sends them again as replays, which
        the backend stores once."""
        try:
            self._acks.save()
        except OSError as exc:
            self._warn(
                "acks",
                f"markov_otel: cannot record what the backend took in {self._spool.dir}/"
                f"acks.json ({exc.strerror or exc}); sending goes on, and a later `mkv sync` "
                "sends those lines again (the backend stores them once)",
            )
        else:
            self._trouble.clear("acks")

    def _close_clients(self) -> None:
        for client in self._line_clients:
            client.close()

    def _body_limit(self, refused: int, client: Client | None = None) -> int:
        """The backend's body limit (GET /api/v1/limits); half the refused size if unknown."""
        if self._max_body is None:
            try:
                limits = (client or self._client).call(
                    "GET", "/api/v1/limits", timeout=self._timeout()
                )
                self._max_body = int(limits["max_body_bytes"])
            except (Retry, Refused, KeyError, TypeError, ValueError):
                return refused // 2
        return self._max_body

    def _set_aside(self, signal: str, line: SpoolLine, exc: Refused) -> None:
        entry = self._acks.set_aside(signal, line, exc.status, str(exc))
        self.progress.set_aside += 1
        rid = self._spool.dir.name
        self._trouble.say(
            "set-aside", logging.ERROR,
            "markov_otel: the backend refused line %d of %s.jsonl of recording %s (%s); it is "
            "set aside and the rest of the run goes on. `mkv show %s` lists what was set "
            "aside; fix the cause, then run: mkv sync %s --resend-set-aside",
            entry.line, signal, rid, entry.reason, rid, rid,
        )  # fmt: skip

    def _resend_set_aside(self) -> None:
        """Try every set-aside line once more; weather is retried until the deadline."""
        while True:
            try:
                self.progress.resent += self._resend_once()
                break
            except Retry as exc:
                if self._past_deadline():
                    raise BackendError(f"{exc}; run mkv sync --resend-set-aside again") from exc
                self._attempt += 1
                time.sleep(exc.delay if exc.delay is not None else backoff(self._attempt))
            except Refused as exc:
                raise BackendError(str(exc)) from exc
        self.progress.still_set_aside = len(self._acks.set_aside_lines())

    def _resend_once(self) -> int:
        stored = 0
        for entry in self._acks.set_aside_lines():
            data = self._spool.read_line(entry.signal, entry.offset, entry.end)
            key = f"{self._key_prefix}{entry.signal}:{entry.line}"
            try:
                self._send_line(entry.signal, data, key)
            except Refused as exc:
                if exc.status not in LINE_REFUSALS:
                    raise
                continue  # still refused: it stays aside
            self._acks.taken_back(entry)
            self._save_acks()
            stored += 1
        return stored

    # -- state ---------------------------------------------------------------------------------

    def _all_sent(self) -> bool:
        for signal in self._target.signals:
            lines, offset = self._acks.mark(signal)
            if next(iter(self._spool.lines(signal, lines, offset)), None):
                return False
        if self._uploads is not None and self._uploads.unsent():
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
        """Wait out a retry delay (the backend's Retry-After, or a backoff), within the deadline.
        New lines to send do not cut it short (the backend asked for the wait): only stop()
        beginning (it retries at once, as it always did) or hurry() does."""
        until, stopping, woke = time.monotonic() + delay, self._stopping, False
        while True:
            left = until - time.monotonic()
            if self._deadline is not None:
                left = min(left, self._deadline - time.monotonic())
            if left <= 0:
                break
            if self._wake.wait(left):
                self._wake.clear()
                woke = True
                if self._stopping != stopping:
                    break
        if woke:
            self._wake.set()  # what woke it is seen by the next round at once

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
        resend_set_aside: bool = False,
    ) -> Progress:
        """Register, PATCH and send everything now, in this thread; BackendError if it can't.
        With `resend_set_aside`, lines this backend refused before are tried once more."""
        self._registration, self._deadline = registration, deadline
        self._quiet, self._on_line = True, progress
        self.update_recording(patch)
        try:
            self._sync_rounds(progress)
            if resend_set_aside:
                self._resend_set_aside()
            else:
                self.progress.still_set_aside = len(self._acks.set_aside_lines())
            return self.progress
        finally:
            self._close_clients()

    def _sync_rounds(self, progress: Callable[[Progress], None] | None) -> Progress:
        while True:
            delay = self.pump()
            if progress is not None:
                progress(self.progress)
            rid = self._spool.dir.name
            if self._paused:
                raise BackendError(
                    f"{self._client.base} refused recording {rid}: {self._paused}. "
                    f"{_fix_for(self._paused)}then run: mkv sync {rid}"
                )
            if self._all_sent():
                return self.progress
            if self.gave_up:
                raise BackendError(
                    f"cannot connect to {self._client.base}: is the backend running? Start it "
                    f"({serve_step()}) or name another (--endpoint URL), then run: mkv sync {rid}"
                )
            if self._past_deadline():
                raise BackendError(
                    f"{self._client.base} did not take recording "
                    f"{self._spool.dir.name} in time; run mkv sync again"
                )
            time.sleep(delay or 0.01)


class _Call:
    """One line's POST in a daemon thread of its own (a hung call never holds up exit)."""

    def __init__(self, send: Callable[[str, bytes, str], None], *args: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(send, args), name="markov-send", daemon=True
        )
        self._thread.start()

    def _run(self, send: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            send(*args)
        except BaseException as exc:  # handed to the sender thread by result()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> None:
        """Wait for the answer; raise what the call raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


def _fix_for(refusal: str) -> str:
    """What to fix for a refusal that pauses sending (the HTTP status is in its text)."""
    if refusal.startswith(("HTTP 401", "HTTP 403")):
        return "Check the API key (`mkv config set api_key KEY` or MARKOV_API_KEY), "
    if refusal.startswith("HTTP 404"):
        return "Check the endpoint (`mkv config get endpoint`), "
    return "Fix the cause, "
