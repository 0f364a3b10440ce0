"""The OpenTelemetry side for real: an OTLP/HTTP receiver, Prometheus, and an app's own pipeline."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from markov_otel import ExperimentRecorder, RecordingMode

_REQUESTS = {
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}


class OtlpReceiver:
    """A real OTLP/HTTP receiver on 127.0.0.1:0 that keeps every request, parsed."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, object]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                kind = _REQUESTS[self.path]()
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    Parse(body, kind)
                else:
                    kind.ParseFromString(body)
                receiver.requests.append((self.path, ctype, kind))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, path: str, json_only: bool | None = None) -> list[object]:
        return [
            req
            for p, ctype, req in self.requests
            if p == path and (json_only is None or ("json" in ctype) == json_only)
        ]


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _attrs(kvs: object) -> dict[str, object]:
    out = {}
    for kv in kvs:  # type: ignore[attr-defined]
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_aggregated_view_span_and_events_reach_the_collector(
    otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, last values, the span and log events are exported."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    recorder = ExperimentRecorder("otlp-run", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        for i in range(50):
            recorder.add_record({"loss": 1.0 / (i + 1), "acc": i / 50})
        recorder.summary.add_training_loss(0.02)
    last = {}
    for req in otlp.of("/v1/metrics"):
        for rm in req.resource_metrics:  # type: ignore[attr-defined]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.gauge.data_points:
                        attrs = _attrs(dp.attributes)
                        assert attrs["markov.recording.id"] == recorder.recording_id
                        last[(metric.name, attrs.get("markov.key"))] = getattr(
                            dp, dp.WhichOneof("value")
                        )
    assert last[("markov.record.last", "loss")] == pytest.approx(1.0 / 50)
    assert last[("markov.record.last", "acc")] == pytest.approx(49 / 50)
    assert last[("markov.record.step", "loss")] == 49
    assert last[("markov.summary", "training_loss")] == pytest.approx(0.02)
    spans = [
        s
        for r in otlp.of("/v1/traces")
        for rs in r.resource_spans  # type: ignore[attr-defined]
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert [s.name for s in spans] == ["experiment otlp-run"]
    events = [
        lr.event_name
        for r in otlp.of("/v1/logs")
        for rl in r.resource_logs  # type: ignore[attr-defined]
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]
    assert events.count("markov.lifecycle") == 2


def test_export_points_sends_every_exact_point_to_the_collector(
    otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export_points mirrors the spooled per-step points to the collector, each exactly once."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    monkeypatch.setenv("MARKOV_EXPORT_POINTS", "1")
    recorder = ExperimentRecorder(
        "mirror",
        recording_mode=RecordingMode.OFFLINE,
        batch_size=100,
        batch_processing_interval=0.05,
    )
    with recorder:
        for i in range(1000):
            recorder.add_record({"loss": float(i), "acc": -float(i)})
    steps: dict[str, list[int]] = {"loss": [], "acc": []}
    for req in otlp.of("/v1/metrics", json_only=True):
        for rm in req.resource_metrics:  # type: ignore[attr-defined]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.gauge.data_points:
                        steps[metric.name].append(_attrs(dp.attributes)["markov.step"])
    assert sorted(steps["loss"]) == list(range(1000))
    assert sorted(steps["acc"]) == list(range(1000))


def test_app_spans_join_the_experiment_trace_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """trace_children: a span the app starts inside `with recorder:` shares the run's trace id."""
    exporter = InMemorySpanExporter()
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(exporter))
    ids = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("MARKOV_TRACE_CHILDREN", flag)
        recorder = ExperimentRecorder(f"traced-{flag}", recording_mode=RecordingMode.OFFLINE)
        with recorder, app.get_tracer("app").start_as_current_span(f"load-{flag}"):
            recorder.add_record({"loss": 1.0})
        line = json.loads((recorder.run_dir / "traces.jsonl").read_text().splitlines()[0])
        ours = line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        theirs = next(s for s in exporter.get_finished_spans() if s.name == f"load-{flag}")
        ids[flag] = (
            ours["traceId"],
            format(theirs.context.trace_id, "032x"),
            ours["spanId"],
            format(theirs.parent.span_id, "016x") if theirs.parent else None,
        )
    assert ids["1"][0] == ids["1"][1] and ids["1"][2] == ids["1"][3]
    assert ids["0"][0] != ids["0"][1] and ids["0"][3] is None


def test_sender_http_calls_are_not_traced_by_app_instrumentation(backend: object) -> None:
    """The app's requests auto-instrumentation sees its own calls, never the recorder's."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    exporter = InMemorySpanExporter()
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=app)
    try:
        recorder = ExperimentRecorder(
            "quiet",
            recording_mode=RecordingMode.ONLINE,
            endpoint=backend.url,
            api_key=backend.token,
        )  # type: ignore[attr-defined]
        with recorder:
            for i in range(20):
                recorder.add_record({"loss": float(i)})
        requests.get(f"{backend.url}/api/v1/recordings", headers=backend.headers, timeout=5)  # type: ignore[attr-defined]
    finally:
        instrumentor.uninstrument()
    urls = [
        s.attributes.get("http.url") or s.attributes.get("url.full")
        for s in exporter.get_finished_spans()
    ]
    assert urls == [f"{backend.url}/api/v1/recordings"]  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_prometheus_scrapes_last_values_with_the_recording_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Prometheus scrapes the recorder; PromQL returns the last values per recording id."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    monkeypatch.setenv("MARKOV_PROMETHEUS_PORT", "0")
    recorder = ExperimentRecorder(
        "scraped", recording_mode=RecordingMode.OFFLINE, batch_processing_interval=0.05
    )
    recorder.start()
    for i in range(100):
        recorder.add_record({"loss": 1.0 / (i + 1), "accuracy": i / 100})
    target = f"127.0.0.1:{recorder.config['prometheus_port']}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: markov\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    web = f"127.0.0.1:{_free_port()}"
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = f'markov_record_last{{markov_recording_id="{recorder.recording_id}"}}'
        result = _poll_prometheus(f"http://{web}", query, want=2)
    finally:
        prom.terminate()
        prom.wait(10)
        recorder.stop()
    values = {r["metric"]["markov_key"]: float(r["value"][1]) for r in result}
    assert values == {"loss": pytest.approx(1.0 / 100), "accuracy": pytest.approx(0.99)}
    assert {r["metric"]["markov_recording_name"] for r in result} == {"scraped"}


def _poll_prometheus(base: str, query: str, *, want: int, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{base}/api/v1/query", params={"query": query}, timeout=2)
            result = answer.json()["data"]["result"]
            if len(result) >= want:
                return result
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never returned {want} series for {query}")


def test_a_silent_collector_cannot_hold_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector that accepts and never answers: stop() keeps its bound; the run dir is whole."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections queue up and are never answered
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://{silent.getsockname()[0]}:{silent.getsockname()[1]}",
        )
        recorder = ExperimentRecorder(
            "silent", recording_mode=RecordingMode.OFFLINE, sync_data_timeout=1.0
        )
        recorder.start()
        for i in range(100):
            recorder.add_record({"loss": float(i)})
        began = time.monotonic()
        recorder.stop()
        took = time.monotonic() - began
    # The spec's bound is sync_data_timeout + 0.5 s; 4 s of room for a loaded machine, still
    # short of the exporter's own 10 s timeout that an unbounded stop() would wait out.
    assert took <= 1.0 + 4.0
    traces = (recorder.run_dir / "traces.jsonl").read_text().splitlines()
    assert len(traces) == 1 and "experiment silent" in traces[0]
    steps = [
        json.loads(line) for line in (recorder.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    points = sum(
        len(m["gauge"]["dataPoints"])
        for d in steps
        for rm in d["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    )
    assert points == 100


def test_the_scrape_endpoint_serves_exactly_the_published_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every metric family the recorder exposes is in protocol.md's table, and vice versa."""
    from test_collector_config import published_prometheus_names

    monkeypatch.setenv("MARKOV_PROMETHEUS_PORT", "0")
    recorder = ExperimentRecorder(
        "names", recording_mode=RecordingMode.OFFLINE, batch_processing_interval=0.05
    )
    with recorder:
        recorder.add_record({"loss": 0.5})
        recorder.summary.add_training_loss(0.4)
        url = f"http://127.0.0.1:{recorder.config['prometheus_port']}/metrics"
        deadline = time.monotonic() + 10
        while "markov_record_last{" not in (text := requests.get(url, timeout=5).text):
            assert time.monotonic() < deadline, "the flusher never published the last value"
            time.sleep(0.05)
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")} - {
        "target_info"
    }
    counters = {f"{name}_total" for name in families if f"{name}_total" in text}
    exposed = {name for name in families if f"{name}_total" not in counters} | counters
    assert exposed == published_prometheus_names()


def test_export_points_over_grpc_retries_a_dead_port_and_refuses_a_line_that_is_not_otlp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the mirror targets the gRPC endpoint as given; nobody
    listening is a Retry (unreachable), a line that is not OTLP-JSON metrics a Refused (400)."""
    from markov_otel.config import Settings
    from markov_otel.shipping.transport import Refused, Retry, Target, client_for

    port = _free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20k")
    target = Target.otlp_points(Settings())
    assert target.grpc and target.base == f"http://127.0.0.1:{port}"
    client = client_for(target, 2.0)
    try:
        line = b'{"resourceMetrics":[]}'
        with pytest.raises(Retry) as dead:
            client.call("POST", target.paths["metrics"], data=line)
        assert dead.value.unreachable
        with pytest.raises(Refused) as bad:
            client.call("POST", target.paths["metrics"], data=b'{"resourceSpans":[]}')
        assert bad.value.status == 400
    finally:
        client.close()
