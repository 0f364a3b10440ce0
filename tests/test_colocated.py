"""An app with its own global OTel providers keeps its pipeline; ours stays private (subprocess)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_files import attributes, lines, log_records, points, spans

APP = """
import json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(meter_provider)
exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)

from markov_otel import (
    BinaryOperation, ExperimentAlertCondition, ExperimentRecorder, RecordingMode,
)

requests_made = metrics.get_meter("app").create_counter("app.requests")
tracer = trace.get_tracer("app")
recorder = ExperimentRecorder(name="colo", recording_mode=RecordingMode.OFFLINE)
recorder.attach_alert_on(
    ExperimentAlertCondition("loss", BinaryOperation.LESS_THAN, 0.3), "low"
)
with recorder:
    for i in range(5):
        with tracer.start_as_current_span("app.step"):
            requests_made.add(1)
            recorder.add_record({"loss": 1.0 / (i + 1)})

data = reader.get_metrics_data()
app_metrics = {
    m.name: [p.value for p in m.data.data_points]
    for rm in data.resource_metrics
    for sm in rm.scope_metrics
    for m in sm.metrics
}
app_spans = [
    {
        "name": s.name,
        "trace_id": format(s.context.trace_id, "032x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else None,
        "resource": dict(s.resource.attributes),
    }
    for s in exporter.get_finished_spans()
]
print(json.dumps({
    "recording_id": recorder.recording_id,
    "metrics": app_metrics,
    "spans": app_spans,
    "same_meter_provider": metrics.get_meter_provider() is meter_provider,
    "same_tracer_provider": trace.get_tracer_provider() is tracer_provider,
}))
"""


def run_app(trace_children: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["MARKOV_TRACE_CHILDREN"] = "1" if trace_children else "0"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(APP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Overriding of current" not in result.stderr  # nobody set a provider twice
    return json.loads(result.stdout)


@pytest.mark.parametrize("trace_children", [False, True], ids=["default", "trace_children"])
def test_app_global_providers_keep_their_pipeline(isolated: Path, trace_children: bool) -> None:
    """The app's global meter/tracer providers get its data only; our run dir gets ours only."""
    app = run_app(trace_children)
    assert app["same_meter_provider"] and app["same_tracer_provider"]

    assert app["metrics"] == {"app.requests": [5]}  # nothing of ours arrived there
    assert [s["name"] for s in app["spans"]] == ["app.step"] * 5
    for span in app["spans"]:
        assert not any(k.startswith("markov.") for k in span["resource"])

    run = isolated / app["recording_id"]
    (ours,) = spans(run)  # the app's spans did not arrive here
    assert ours.name == "experiment colo"
    assert {p.key for p in points(run)} == {"loss"}
    events = {r.event_name for r in log_records(run)}
    assert events == {"markov.lifecycle", "markov.alert"}

    # ids are hex in OTLP-JSON (the proto parser would read them as base64): take them raw
    raw = json.loads(lines(run, "traces")[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    our_trace, our_span = raw["traceId"], raw["spanId"]
    if trace_children:  # opt-in: the app's spans become children of the experiment span
        assert {s["trace_id"] for s in app["spans"]} == {our_trace}
        assert {s["parent"] for s in app["spans"]} == {our_span}
    else:
        assert our_trace not in {s["trace_id"] for s in app["spans"]}
        assert {s["parent"] for s in app["spans"]} == {None}


class OtlpReceiver:
    """A real OTLP/HTTP receiver on loopback that keeps every request body by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_our_collector_export_carries_ours_not_the_apps(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the collector gets our view and span, not the app's."""
    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        app = run_app(trace_children=False)
    finally:
        receiver.close()
    assert app["metrics"] == {"app.requests": [5]}

    names: set[str] = set()
    for body in receiver.bodies.get("/v1/metrics", []):
        request = ExportMetricsServiceRequest.FromString(body)
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            assert resource["markov.recording.id"] == app["recording_id"]
            names.update(m.name for sm in rm.scope_metrics for m in sm.metrics)
    assert "markov.record.last" in names
    assert "app.requests" not in names

    span_names = [
        span.name
        for body in receiver.bodies.get("/v1/traces", [])
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert span_names == ["experiment colo"]
