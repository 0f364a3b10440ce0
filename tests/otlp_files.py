"""Reading a run dir back the way an OTLP consumer would: through the official proto classes."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import Parse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from polling import until

from markov_otel.recording.system_metrics import SYSTEM_PREFIXES


@dataclass(frozen=True)
class WirePoint:
    """One gauge data point as read from metrics.jsonl."""

    key: str
    name: str
    step: int
    value: float | int
    kind: str
    time_unix_nano: int


def lines(run_dir: Path, signal: str) -> list[str]:
    """The complete lines of one signal file (empty when the file does not exist)."""
    path = Path(run_dir) / f"{signal}.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [line for line in text.split("\n")[:-1] if line]


def metrics(run_dir: Path) -> list[MetricsData]:
    return [Parse(line, MetricsData()) for line in lines(run_dir, "metrics")]


def traces(run_dir: Path) -> list[TracesData]:
    return [Parse(line, TracesData()) for line in lines(run_dir, "traces")]


def logs(run_dir: Path) -> list[LogsData]:
    return [Parse(line, LogsData()) for line in lines(run_dir, "logs")]


def value_of(any_value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue."""
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in key_values}


def points(run_dir: Path) -> list[WirePoint]:
    """Every data point of every batch, in file order."""
    out = []
    for batch in metrics(run_dir):
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.WhichOneof("data") == "exponential_histogram":
                        continue  # a recorded array: histogram_points()
                    assert metric.WhichOneof("data") == "gauge", metric.name
                    for dp in metric.gauge.data_points:
                        attrs = attributes(dp.attributes)
                        kind = dp.WhichOneof("value")
                        out.append(
                            WirePoint(
                                key=attrs.get("markov.key", metric.name),
                                name=metric.name,
                                step=attrs["markov.step"],
                                value=getattr(dp, kind),
                                kind=kind,
                                time_unix_nano=dp.time_unix_nano,
                            )
                        )
    return out


def histogram_points(run_dir: Path) -> list[tuple[str, dict[str, Any], Any]]:
    """Every ExponentialHistogram point (a recorded array): its key, attributes and the proto
    point, in file order."""
    out = []
    for batch in metrics(run_dir):
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.WhichOneof("data") != "exponential_histogram":
                        continue
                    for dp in metric.exponential_histogram.data_points:
                        attrs = attributes(dp.attributes)
                        out.append((attrs.get("markov.key", metric.name), attrs, dp))
    return out


def attributed_points(run_dir: Path) -> list[dict[str, Any]]:
    """Every point with its metric name, all its attributes and its record key (`markov.key`,
    else the name), step, value and time: for series that carry attributes."""
    out = []
    for batch in metrics(run_dir):
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.gauge.data_points:
                        attrs = attributes(dp.attributes)
                        out.append(
                            {
                                "name": metric.name,
                                "key": attrs.get("markov.key", metric.name),
                                "attributes": attrs,
                                "step": attrs["markov.step"],
                                "value": getattr(dp, dp.WhichOneof("value")),
                                "time": dp.time_unix_nano,
                            }
                        )
    return out


def until_sampled(run_dir: Path, seconds: float = 60.0) -> None:
    """Wait until the run dir holds a system-metrics point, when MARKOV_SYSTEM_METRICS=1. A
    child recording a short run calls it before it stops: on a loaded machine the sampler's
    first sample (after its set-up and one interval) may come after the run's last step, and
    stop() samples only a stretch long enough to measure (FINAL_SAMPLE_MIN_WINDOW)."""
    if os.environ.get("MARKOV_SYSTEM_METRICS") != "1":
        return  # no sampler: nothing will come

    def sampled() -> bool:
        return any(p["name"].startswith(SYSTEM_PREFIXES) for p in attributed_points(run_dir))

    until(sampled, f"a system-metrics point in {run_dir}", seconds)


def resources(run_dir: Path) -> list[dict[str, Any]]:
    """The resource attributes of every metrics batch."""
    return [
        attributes(rm.resource.attributes)
        for batch in metrics(run_dir)
        for rm in batch.resource_metrics
    ]


def last_resource(run_dir: Path) -> dict[str, Any]:
    """Resource attributes of the last metrics batch (only that line is parsed)."""
    batch = Parse(lines(run_dir, "metrics")[-1], MetricsData())
    return attributes(batch.resource_metrics[0].resource.attributes)


def log_records(run_dir: Path) -> list[Any]:
    return [
        record
        for batch in logs(run_dir)
        for rl in batch.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
    ]


def spans(run_dir: Path) -> list[Any]:
    return [
        span
        for batch in traces(run_dir)
        for rs in batch.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def recording(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "recording.json").read_text(encoding="utf-8"))


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that is bound but not listening: connections to it are refused.

    Keep the returned socket open for as long as the port must stay refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]
