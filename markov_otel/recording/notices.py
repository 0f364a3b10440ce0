"""Alert notifications to people (a log warning, the webhooks), rate-limited per condition.

Every firing stays in the run's data (log event, span event, recording.json, the backend); only
what interrupts a person is limited. Per condition (condition and text), the first firing is
said at once; later ones within the cooldown (default 60 s, `alert_cooldown`, or per condition
`attach_alert_on(..., cooldown=SECONDS)`) are counted and reported with the next notification:
"… (and 37 more crossings since 12:01:05)". Crossings still held back when the run stops go out
in one closing notification per condition. The cooldown's clock is a constructor option, so a
test passes its own clock instead of patching time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from markov_otel.config import DEFAULT_ALERT_COOLDOWN
from markov_otel.recording.alerts import AlertFiring, ExperimentAlertCondition
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")
_webhook_log = logging.getLogger("markov_otel.recording.alerts")

_Key = tuple[ExperimentAlertCondition, str]


@dataclass(frozen=True)
class Notice:
    """One notification: a firing, and the crossings held back before it (`more`, the first of
    them at `since_unix_nano`). A closing notice reports held-back crossings at the run's end;
    its firing is the last of them."""

    firing: AlertFiring
    more: int = 0
    since_unix_nano: int | None = None
    closing: bool = False

    def message(self) -> str:
        since = _clock_time(self.since_unix_nano)
        if self.closing:
            f = self.firing
            return (
                f"{f.text}: {self.more} more crossings since {since}, the last "
                f"{f.condition.metric_name}={f.value} at step {f.step}"
            )
        more = f" (and {self.more} more crossings since {since})" if self.more else ""
        return self.firing.message() + more


def _clock_time(time_unix_nano: int | None) -> str:
    if time_unix_nano is None:
        return "?"
    return time.strftime("%H:%M:%S", time.localtime(time_unix_nano / 1e9))


class Notifier(Protocol):
    def __call__(self, notice: Notice) -> None: ...

    def close(self, timeout: float) -> None: ...


@dataclass
class _Held:
    sent_at: float  # the clock's time of the last notification
    more: int = 0
    since_unix_nano: int | None = None
    last: AlertFiring | None = None


class AlertNotices:
    """One recorder's notifications: `notices(firing)` per firing, `close()` at the end."""

    def __init__(
        self,
        cooldown: float = DEFAULT_ALERT_COOLDOWN,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default, self._name, self._clock = cooldown, name, clock
        self._cooldowns: dict[_Key, float] = {}
        self._held: dict[_Key, _Held] = {}
        self._notifiers: list[Notifier] = []
        self._lock = threading.Lock()

    def set_cooldown(
        self, condition: ExperimentAlertCondition, text: str, seconds: float | None
    ) -> None:
        """The cooldown of one condition (None: the recorder's `alert_cooldown`)."""
        if seconds is not None:
            self._cooldowns[(condition, text)] = seconds

    def start(self, notifiers: Sequence[Notifier]) -> None:
        self._notifiers = list(notifiers)

    def __call__(self, firing: AlertFiring) -> None:
        """Notify now, or count the firing into the next notification of its condition."""
        key = (firing.condition, firing.text)
        now = self._clock()
        with self._lock:
            held = self._held.get(key)
            if held is not None and now - held.sent_at < self._cooldowns.get(key, self._default):
                held.more += 1
                held.last = firing
                if held.since_unix_nano is None:
                    held.since_unix_nano = firing.time_unix_nano
                return
            self._held[key] = _Held(now)
        self._say(Notice(firing, *_taken(held)))

    def close(self, timeout: float) -> None:
        """Say the crossings still held back (one closing notice per condition), then close the
        notifiers within `timeout` seconds."""
        with self._lock:
            closing = [held for held in self._held.values() if held.more and held.last]
            self._held.clear()
        for held in closing:
            assert held.last is not None
            self._say(Notice(held.last, held.more, held.since_unix_nano, closing=True))
        deadline = time.monotonic() + timeout
        for notifier in self._notifiers:
            notifier.close(max(0.0, deadline - time.monotonic()))

    def _say(self, notice: Notice) -> None:
        log.warning("markov alert [%s]: %s", self._name, notice.message())
        for notifier in self._notifiers:
            notifier(notice)


def _taken(held: _Held | None) -> tuple[int, int | None]:
    return (0, None) if held is None else (held.more, held.since_unix_nano)


class WebhookNotifier:
    """Posts Slack-compatible JSON from its own thread: `{"text": …, "alert": {the protocol's
    alert}, "more_crossings": N}`; failures are logged once."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url, self.timeout = url, timeout
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="markov-webhook", daemon=True)
        self._trouble = SayOnce(_webhook_log)
        self._thread.start()

    def __call__(self, notice: Notice) -> None:
        self._queue.put(notice)

    def close(self, timeout: float = 2.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        with requests.Session() as session:
            while (notice := self._queue.get()) is not None:
                body: dict[str, Any] = {
                    "text": f":rotating_light: {notice.message()}",
                    "alert": notice.firing.to_json(),
                    "more_crossings": notice.more,
                }
                try:
                    session.post(self.url, json=body, timeout=self.timeout).raise_for_status()
                except requests.RequestException as exc:
                    self._trouble.say(
                        "webhook",
                        logging.WARNING,
                        "alert webhook failed (%s); alerts stay in the run's logs",
                        exc,
                    )
