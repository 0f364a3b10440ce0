"""What the recorder's background threads call back into it: the flusher's writes and the end of
each of its cycles (alert delivery, recording.json saves, waking the senders), the system
sampler's samples, and the artifact copier's stored files.

`Background` is a part of ExperimentRecorder (a mixin), between its registration and its
lifecycle. None of this runs on the training thread, except an app's own alert (AlertReader),
which is queued for the flusher like the recorder's own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from markov_otel.recording.registration import Registration

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from markov_otel.otel.providers import Telemetry
    from markov_otel.recording.alerts import AlertFiring, AlertRules
    from markov_otel.recording.notices import AlertNotices
    from markov_otel.shipping.flusher import Flusher
    from markov_otel.shipping.sender import Sender

SAVE_EVERY = 2.0
"""Seconds between two saves of recording.json at the end of the flusher's cycles."""


class Background(Registration):
    """The recorder's side of the flusher, the system sampler and the artifact copier."""

    # Given by the recorder (the hot path) and its lifecycle (start()).
    _buffer: deque[Any]
    _kick_at: int
    _kick_base: int
    _running: bool
    _alerts: AlertRules
    _notices: AlertNotices
    _mirror: Sender | None
    _flusher: Flusher
    _telemetry: Telemetry
    _span: Span

    def _senders(self) -> list[Sender]:
        return [s for s in (self._sender, self._mirror) if s is not None]

    def _write_metrics(self, data: bytes, points: int) -> None:
        self._spool.append("metrics", data)

    def _write_logs(self, data: bytes) -> None:
        self._spool.append("logs", data)

    def _after_cycle(self) -> None:
        self._kick_at = self._kick_base  # the buffer was drained: kick at a full batch again
        while self._alerts.fired:
            self._deliver(self._alerts.fired.popleft())
        for sender in self._senders():
            sender.wake()
        now = time.monotonic()
        if now - self._saved_at > SAVE_EVERY:
            self._save()

    def _deliver(self, firing: AlertFiring) -> None:
        """A fired alert: kept in the run, a log and span event, a notice, and ONLINE a PATCH."""
        self._alert_log.append(firing.to_json())
        attrs = {
            "markov.alert.metric": firing.condition.metric_name,
            "markov.alert.operation": firing.condition.operation.value,
            "markov.alert.threshold": firing.condition.metric_value,
            "markov.alert.value": float(firing.value),
            "markov.alert.text": firing.text,
            "markov.alert.id": firing.alert_id,
        }
        if firing.step is not None:
            attrs["markov.step"] = firing.step
        self._telemetry.event(
            "markov.alert",
            attrs,
            body=firing.message(),
            time_ns=firing.time_unix_nano,
            span=self._span,
        )
        self._notices(firing)  # a person hears of it at most once per cooldown
        if self._sender is not None:
            self._sender.update_recording({"alerts": [firing.to_json()]})

    def _deliver_external_alert(self, firing: AlertFiring) -> None:
        """From AlertReader (an app's own metrics): delivered by the flusher like our own."""
        if self._running:
            self._alerts.fired.append(firing)
            self._flusher.wake()

    def _append_sample(self, time_ns: int, values: Mapping[str, float | int]) -> None:
        """A system sample as a record, with the step of the last record (0 before the first):
        the newest buffered, else the last the flusher took (see Flusher.taking)."""
        with self._flusher.taking:
            buffer = self._buffer
            step = buffer[-2] if buffer else max(self._view.last_step, 0)
            buffer.extend((time_ns, step, values))

    def _artifact_stored(self, entry: dict[str, Any]) -> None:
        """The copier thread stored an artifact: a log record names it, the sender uploads it."""
        attributes = {
            "markov.key": entry["name"],
            "markov.artifact.kind": entry["kind"],
            "markov.artifact.digest": entry["digest"],
            "markov.artifact.media_type": entry["media_type"],
            "markov.artifact.size": entry["size"],
        }
        if "step" in entry:
            attributes["markov.step"] = entry["step"]
        if "key" in entry:  # an image value: its record key, and its file name
            attributes["markov.key"], attributes["markov.artifact.name"] = (
                entry["key"],
                entry["name"],
            )
        body = f"artifact {entry['name']} ({entry['kind']}, {entry['size']} bytes)"
        self._telemetry.event("markov.artifact", attributes, body=body, span=self._span)
        for sender in self._senders():
            sender.wake()
