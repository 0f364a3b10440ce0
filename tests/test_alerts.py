"""Alerts: edge-triggered firings, where they go, and AlertReader on an app's own metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from otlp_files import attributes, closed_port, log_records, recording, spans

from markov_otel import (
    AlertReader,
    BinaryOperation,
    ConfigError,
    ExperimentAlertCondition,
    ExperimentRecorder,
    RecordingMode,
)
from markov_otel.cli.main import main

LT = BinaryOperation.LESS_THAN


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder(name="alerts", recording_mode=RecordingMode.OFFLINE, **kwargs)


def alert_events(run: Path) -> list[dict[str, Any]]:
    return [attributes(r.attributes) for r in log_records(run) if r.event_name == "markov.alert"]


class Webhook:
    """A real HTTP server on loopback that keeps every POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with hook.arrived:
                    hook.bodies.append(body)
                    hook.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


# -- edge-triggered firing ---------------------------------------------------------------------


LOSSES = [0.5, 0.2, 0.1, 0.3, 0.2, 0.24, 0.25, 0.5, 0.1]
FIRES_AT = [1, 4, 8]  # false->true only; quiet while it stays true


def test_alert_fires_exactly_on_crossings(isolated: Path, caplog: pytest.LogCaptureFixture) -> None:
    """loss < 0.25 fires on each false->true crossing, with the record's value and step."""
    recorder = offline()
    recorder.attach_alert_on(ExperimentAlertCondition("loss", LT, 0.25), "converged", cooldown=0)
    with caplog.at_level(logging.WARNING, logger="markov_otel"), recorder:
        for loss in LOSSES:
            recorder.add_record({"loss": loss, "acc": 1 - loss})
    run = isolated / recorder.recording_id

    events = alert_events(run)
    assert [e["markov.step"] for e in events] == FIRES_AT
    assert [e["markov.alert.value"] for e in events] == [LOSSES[s] for s in FIRES_AT]
    first = events[0]
    assert first["markov.alert.metric"] == "loss"
    assert first["markov.alert.operation"] == "<"
    assert first["markov.alert.threshold"] == 0.25
    assert first["markov.alert.text"] == "converged"

    alerts = recording(run)["alerts"]
    assert [(a["step"], a["value"], a["text"]) for a in alerts] == [
        (s, LOSSES[s], "converged") for s in FIRES_AT
    ]
    assert len({a["alert_id"] for a in alerts}) == 3
    assert all(a["metric_name"] == "loss" and a["operation"] == "<" for a in alerts)

    messages = [r.getMessage() for r in caplog.records if "converged" in r.getMessage()]
    assert len(messages) == 3
    assert "loss=0.2 at step 1" in messages[0]


@pytest.mark.parametrize(
    ("op", "threshold", "values", "fires_at"),
    [
        (BinaryOperation.LESS_THAN, 1, [2, 1, 0, 1, 0], [2, 4]),
        (BinaryOperation.LESS_THAN_OR_EQUAL, 1, [2, 1, 0, 2, 1], [1, 4]),
        (BinaryOperation.GREATER_THAN, 1, [1, 2, 3, 1, 2], [1, 4]),
        (BinaryOperation.GREATER_THAN_OR_EQUAL, 1, [0, 1, 2, 0, 1], [1, 4]),
        (BinaryOperation.EQUAL, 1, [1, 1, 0, 1.0, True], [0, 3]),
        (BinaryOperation.NOT_EQUAL, 1, [1, 2, 3, 1, 0], [1, 4]),
    ],
)
def test_every_operation(
    isolated: Path, op: BinaryOperation, threshold: float, values: list[Any], fires_at: list[int]
) -> None:
    """Each BinaryOperation compares value to threshold and fires on its false->true edges."""
    recorder = offline()
    recorder.attach_alert_on(ExperimentAlertCondition("m", op, threshold), f"m {op.value}")
    with recorder:
        for value in values:
            recorder.add_record({"m": value})
    alerts = recording(isolated / recorder.recording_id)["alerts"]
    assert [a["step"] for a in alerts] == fires_at


def test_alert_ignores_records_without_the_metric(isolated: Path) -> None:
    """A record without the metric neither fires nor re-arms the condition."""
    recorder = offline()
    recorder.attach_alert_on(ExperimentAlertCondition("loss", LT, 0.25), "low")
    with recorder:
        recorder.add_record({"loss": 0.1})  # fires, step 0
        recorder.add_record({"acc": 0.9})  # no loss: state unchanged
        recorder.add_record({"loss": 0.1})  # still true: quiet
    alerts = recording(isolated / recorder.recording_id)["alerts"]
    assert [a["step"] for a in alerts] == [0]


def test_alert_on_nested_key_and_several_conditions(isolated: Path) -> None:
    """Conditions work on flattened keys; several conditions on one metric fire independently."""
    recorder = offline()
    recorder.attach_alert_on(ExperimentAlertCondition("val/loss", LT, 0.5), "half")
    recorder.attach_alert_on(ExperimentAlertCondition("val/loss", LT, 0.1), "tenth")
    with recorder:
        for loss in (0.9, 0.4, 0.05, 0.3):
            recorder.add_record({"val": {"loss": loss}})
    alerts = recording(isolated / recorder.recording_id)["alerts"]
    assert sorted((a["text"], a["step"]) for a in alerts) == [("half", 1), ("tenth", 2)]


def test_alert_is_a_span_event_while_running(isolated: Path) -> None:
    """An alert delivered while the run is open is also an event on the experiment span."""
    recorder = offline(batch_processing_interval=0.05)
    recorder.attach_alert_on(ExperimentAlertCondition("loss", LT, 0.25), "converged")
    run = isolated / recorder.recording_id
    with recorder:
        recorder.add_record({"loss": 0.1})
        deadline = time.monotonic() + 30
        while not alert_events(run) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(alert_events(run)) == 1
    (span,) = spans(run)
    names = [e.name for e in span.events]
    assert names == ["markov.lifecycle", "markov.alert", "markov.lifecycle"]
    alert = span.events[1]
    assert attributes(alert.attributes)["markov.alert.text"] == "converged"


# -- notifiers ---------------------------------------------------------------------------------


def test_webhook_gets_slack_compatible_posts(isolated: Path, webhook: Webhook) -> None:
    """With no cooldown, each firing is POSTed to the webhook as {"text": ..., "alert": {...}}."""
    recorder = offline(webhook_url=webhook.url)
    recorder.attach_alert_on(ExperimentAlertCondition("loss", LT, 0.25), "converged", cooldown=0)
    with recorder:
        for loss in LOSSES:
            recorder.add_record({"loss": loss})
    bodies = webhook.wait_for(3)
    assert len(bodies) == 3
    assert all("converged" in b["text"] for b in bodies)
    assert [b["alert"]["step"] for b in bodies] == FIRES_AT
    assert [b["alert"]["value"] for b in bodies] == [LOSSES[s] for s in FIRES_AT]
    ids = [a["alert_id"] for a in recording(isolated / recorder.recording_id)["alerts"]]
    assert [b["alert"]["alert_id"] for b in bodies] == ids


def test_webhook_from_config_file(isolated: Path, webhook: Webhook) -> None:
    """`mkv config set webhook_url URL` is enough for every recorder to notify it."""
    assert main(["config", "set", "webhook_url", webhook.url]) == 0
    recorder = offline()
    recorder.attach_alert_on(
        ExperimentAlertCondition("acc", BinaryOperation.GREATER_THAN, 0.9), "ok"
    )
    with recorder:
        recorder.add_record({"acc": 0.95})
    (body,) = webhook.wait_for(1)
    assert body["alert"]["metric_name"] == "acc"
    assert body["alert"]["threshold"] == 0.9


def test_unreachable_webhook_does_not_hurt_the_run(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook nobody listens on logs one warning; the alert and the records stay on disk."""
    sock, port = closed_port()
    with sock, caplog.at_level(logging.WARNING, logger="markov_otel"):
        recorder = offline(webhook_url=f"http://127.0.0.1:{port}/hook")
        recorder.attach_alert_on(ExperimentAlertCondition("loss", LT, 0.5), "low")
        with recorder:
            for loss in (0.1, 0.9, 0.1, 0.9, 0.1):
                recorder.add_record({"loss": loss})
    run = isolated / recorder.recording_id
    assert len(recording(run)["alerts"]) == 3
    assert recording(run)["status"] == "finished"
    failures = [r for r in caplog.records if "webhook failed" in r.getMessage()]
    assert len(failures) == 1


# -- AlertReader on an application's own MeterProvider -----------------------------------------


def test_alert_reader_on_app_meter_provider() -> None:
    """AlertReader fires on the app's gauge per crossing, per series, to on_alert and logging."""
    got: list[Any] = []
    reader = AlertReader(
        [(ExperimentAlertCondition("queue.depth", BinaryOperation.GREATER_THAN, 100), "backlog")],
        on_alert=got.append,
        interval_seconds=3600,
    )
    provider = MeterProvider(metric_readers=[reader])
    try:
        gauge = provider.get_meter("app").create_gauge("queue.depth")
        other = provider.get_meter("app").create_gauge("latency")
        for depth in (10, 150, 200, 50, 120):
            gauge.set(depth, {"queue": "a"})
            other.set(1000)
            reader.collect()
        gauge.set(500, {"queue": "b"})
        reader.collect()
    finally:
        provider.shutdown()
    assert [(f.value, f.text) for f in got] == [
        (150, "backlog"),
        (120, "backlog"),
        (500, "backlog"),
    ]
    assert reader.firings == got
    assert all(f.condition.metric_name == "queue.depth" for f in got)


def test_alert_reader_on_app_counter(caplog: pytest.LogCaptureFixture) -> None:
    """AlertReader sees cumulative sums too, and logs each firing through
    markov_otel.recording.alerts."""
    reader = AlertReader(
        [(ExperimentAlertCondition("errors", BinaryOperation.GREATER_THAN_OR_EQUAL, 3), "errs")],
        interval_seconds=3600,
    )
    provider = MeterProvider(metric_readers=[reader])
    try:
        counter = provider.get_meter("app").create_counter("errors")
        with caplog.at_level(logging.WARNING, logger="markov_otel.recording.alerts"):
            for _ in range(5):
                counter.add(1)
                reader.collect()
    finally:
        provider.shutdown()
    assert [f.value for f in reader.firings] == [3]
    assert any(
        "errs" in r.getMessage() for r in caplog.records if r.name == "markov_otel.recording.alerts"
    )


def test_alert_reader_fires_into_a_recording(isolated: Path) -> None:
    """With recorder=, the app's firings land in the run: recording.json and a log event."""
    recorder = offline()
    reader = AlertReader(
        [(ExperimentAlertCondition("gpu.temp", BinaryOperation.GREATER_THAN, 80), "hot")],
        recorder=recorder,
        interval_seconds=3600,
    )
    provider = MeterProvider(metric_readers=[reader])
    with recorder:
        gauge = provider.get_meter("app").create_gauge("gpu.temp")
        gauge.set(90)
        reader.collect()
        recorder.add_record({"loss": 1.0})
    provider.shutdown()
    run = isolated / recorder.recording_id
    (alert,) = recording(run)["alerts"]
    assert (alert["metric_name"], alert["value"], alert["text"]) == ("gpu.temp", 90, "hot")
    assert [e["markov.alert.text"] for e in alert_events(run)] == ["hot"]


def test_alert_reader_validates() -> None:
    """AlertReader refuses bad conditions and a non-positive interval."""
    with pytest.raises(ConfigError):
        AlertReader([(("loss", "<", 1), "text")])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="interval_seconds"):
        AlertReader([(ExperimentAlertCondition("x", LT, 1), "t")], interval_seconds=0)
