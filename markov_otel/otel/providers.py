"""The recorder's private OTel providers: the experiment span, log events, the aggregated metrics.

Private means private: nothing here calls `set_*_provider`, so an application's own pipeline is
untouched and ours does not flow into it. Spans and log events always go to the run dir; when an
OTLP endpoint (or a Prometheus port) is configured they also go to the user's collector, and the
MeterProvider publishes the low-cardinality view named in docs/protocol.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator

from markov_otel import __version__
from markov_otel.config import Settings
from markov_otel.otel.encoding import lines_of, proto_to_otlp_json
from markov_otel.otel.resource import experiment_attributes, series_attributes
from markov_otel.shipping.spool import Spool
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

OTLP_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)


class _SpoolExporter:
    """Shared by the span and log exporters: one OTLP-JSON line per export call."""

    def __init__(self, spool: Spool, signal: str) -> None:
        self._spool, self._signal, self._trouble = spool, signal, SayOnce(log)

    def write(self, message: Any) -> bool:
        try:
            self._spool.append(self._signal, lines_of([proto_to_otlp_json(message)]))
            return True
        except OSError as exc:
            self._trouble.say(
                "disk", logging.WARNING,
                "cannot write %s to %s: %s", self._signal, self._spool.dir, exc,
            )  # fmt: skip
            return False


class SpoolSpanExporter(SpanExporter):
    def __init__(self, spool: Spool) -> None:
        self._out = _SpoolExporter(spool, "traces")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self._out.write(encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class SpoolLogExporter(LogRecordExporter):
    def __init__(self, spool: Spool) -> None:
        self._out = _SpoolExporter(spool, "logs")

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self._out.write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def otlp_configured(settings: Settings) -> bool:
    return bool(settings.otlp_endpoint) or any(os.environ.get(name) for name in OTLP_ENV)


class AggregatedView:
    """What the observable instruments read: the last value and step of every key, and counts.

    Written by the flusher and sender threads, read at collection time; the dicts are replaced
    or updated whole under the GIL, so a reader sees a consistent enough snapshot.
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple[float | int | bool, int]] = {}
        self.last_step = -1  # the step of the last record written
        self.summary: Callable[[], Mapping[str, Any]] = dict
        self.counts = {"recorded": 0, "spooled": 0, "sent": 0, "dropped": 0}

    def pending(self) -> int:
        return self.counts["recorded"] - self.counts["spooled"]


class Telemetry:
    """The providers of one recorder, built at start() and shut down at stop()."""

    def __init__(
        self,
        spool: Spool,
        info: Mapping[str, Any],
        settings: Settings,
        view: AggregatedView,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self.resource = Resource.create(experiment_attributes(info))
        self._series = series_attributes(info)
        self._view = view
        self._scrape_server: Any = None
        self.prometheus_port: int | None = None
        self.tracer_provider = TracerProvider(
            resource=self.resource, shutdown_on_exit=False, id_generator=id_generator
        )
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(SpoolSpanExporter(spool)))
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(SpoolLogExporter(spool))
        )
        readers = self._readers(settings)
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False
        )
        if readers:
            self._instruments()
        self.tracer = self.tracer_provider.get_tracer("markov_otel", __version__)
        self.logger = self.logger_provider.get_logger("markov_otel", __version__)
        self._lock = threading.Lock()

    def _readers(self, settings: Settings) -> list[MetricReader]:
        readers: list[MetricReader] = []
        if otlp_configured(settings):
            span_exp, log_exp, metric_exp = _otlp_exporters(settings)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
            readers.append(PeriodicExportingMetricReader(metric_exp))
        if settings.prometheus_port is not None:
            reader, self._scrape_server = _prometheus_reader(settings.prometheus_port)
            self.prometheus_port = self._scrape_server.server_port
            readers.append(reader)
        return readers

    def _instruments(self) -> None:
        meter = self.meter_provider.get_meter("markov_otel", __version__)
        meter.create_observable_gauge(
            "markov.record.last",
            [self._observe_last],
            description="last recorded value of each key",
        )
        meter.create_observable_gauge(
            "markov.record.step",
            [self._observe_step],
            description="step of the last recorded value of each key",
        )
        meter.create_observable_gauge(
            "markov.summary",
            [self._observe_summary],
            description="numeric summary values of the run",
        )
        for name in ("recorded", "spooled", "sent", "dropped"):
            meter.create_observable_counter(f"markov.recorder.points.{name}", [self._count(name)])
        meter.create_observable_gauge("markov.recorder.points.pending", [self._observe_pending])

    def _attrs(self, key: str) -> dict[str, str]:
        return {**self._series, "markov.key": key}

    def _observe_last(self, options: CallbackOptions) -> Iterable[Observation]:
        for key, (value, _step) in list(self._view.last.items()):
            yield Observation(float(value), self._attrs(key))

    def _observe_step(self, options: CallbackOptions) -> Iterable[Observation]:
        for key, (_value, step) in list(self._view.last.items()):
            yield Observation(step, self._attrs(key))

    def _observe_summary(self, options: CallbackOptions) -> Iterable[Observation]:
        for key, value in self._view.summary().items():
            if isinstance(value, (int, float)):
                yield Observation(float(value), self._attrs(key))

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._view.pending(), self._series)

    def _count(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(self._view.counts[name], self._series)

        return observe

    def event(
        self,
        name: str,
        attributes: Mapping[str, Any],
        *,
        body: str,
        time_ns: int | None = None,
        span: Any = None,
    ) -> None:
        """A log event and, when the experiment span is open, a span event of the same name."""
        with self._lock:
            self.logger.emit(
                event_name=name, body=body, attributes=dict(attributes), timestamp=time_ns
            )
            if span is not None and span.is_recording():
                span.add_event(name, dict(attributes), timestamp=time_ns)

    def begin_shutdown(self) -> threading.Thread:
        """Flush and close the providers on a daemon thread, which the caller joins, bounded.

        The run dir already holds the span and events (written synchronously); what may wait
        is the export to the user's collector, whose retries would hold stop() for 10 s or more
        per provider when the collector is down. The caller sends to the Markov backend
        meanwhile, and abandons the export when its own deadline comes.
        """
        if self._scrape_server is not None:
            self._scrape_server.shutdown()
            self._scrape_server.server_close()
        closing = threading.Thread(
            target=self._shutdown_providers, daemon=True, name="markov-otel-shutdown"
        )
        closing.start()
        return closing

    def _shutdown_providers(self) -> None:
        for provider in (self.meter_provider, self.tracer_provider, self.logger_provider):
            try:
                provider.shutdown()
            except Exception as exc:  # exporters of the user's collector: weather, not a bug
                log.warning("OpenTelemetry shutdown: %s", exc)


def _otlp_exporters(settings: Settings) -> tuple[Any, Any, Any]:
    """The standard exporters; they read OTEL_EXPORTER_OTLP_* themselves."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        base = settings.otlp_endpoint
        return (
            OTLPSpanExporter(endpoint=base),
            OTLPLogExporter(endpoint=base),
            OTLPMetricExporter(endpoint=base),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpans,
    )

    def url(path: str) -> str | None:
        return f"{settings.otlp_endpoint.rstrip('/')}{path}" if settings.otlp_endpoint else None

    return (
        HttpSpans(endpoint=url("/v1/traces")),
        HttpLogs(endpoint=url("/v1/logs")),
        HttpMetrics(endpoint=url("/v1/metrics")),
    )


def _prometheus_reader(port: int) -> tuple[MetricReader, Any]:
    """A scrape endpoint on `port` (0: any free port) with a registry of this recorder's own."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        from markov_otel.errors import ConfigError

        raise ConfigError(
            "prometheus_port is set but the Prometheus exporter is not installed; "
            "pip install 'markov-otel[prometheus]'"
        ) from exc
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    addr = os.environ.get("MARKOV_PROMETHEUS_ADDR", "127.0.0.1")
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        from markov_otel.errors import ConfigError

        raise ConfigError(
            f"prometheus_port={port}: cannot listen on {addr}:{port} ({exc.strerror}); "
            "pick a free port or 0"
        ) from exc
    return reader, server
