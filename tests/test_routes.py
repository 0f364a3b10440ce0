"""One run by every route to one backend: every point stored once.

A run reaches a backend online (the recorder's sender), by `mkv sync`, and as a collector
replaying its run dir would send it (`otlpjsonfile` → `otlphttp`: no Idempotency-Key, the lines
joined or cut by a batch processor, OTLP-JSON or protobuf). The backend knows a point by its
identity (recording, key, attributes, step, time), so however many routes carry a point, and in
whichever order, it is stored once. Counted through the read API against the run dir's lines.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend, online_recorder
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main

N = 600
KEYS = ("loss", "val accuracy")  # the second goes with markov.key (its name is sanitised)


@pytest.fixture
def with_system_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """System samples on: points whose series are told apart by attributes (cpu state …)."""
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS", "1")
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS_INTERVAL", "0.1")


def record(recorder: ExperimentRecorder) -> ExperimentRecorder:
    """N records of KEYS; halfway, the run waits for its first system sample on disk."""
    with recorder:
        for i in range(N):
            recorder.add_record({KEYS[0]: 1.0 / (i + 1), KEYS[1]: i / N})
            if i == N // 2:
                spool = recorder.run_dir / "metrics.jsonl"
                deadline = time.monotonic() + 30
                while not _sampled(spool) and time.monotonic() < deadline:
                    time.sleep(0.05)
    return recorder


def _sampled(spool: Path) -> bool:
    return spool.exists() and b"system." in spool.read_bytes()


def spool_lines(run_dir: Path) -> list[dict[str, Any]]:
    text = (run_dir / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expected_points(lines: list[dict[str, Any]]) -> Counter[str]:
    """Points per record key in the run dir's lines (`markov.key`, else the metric name)."""
    counts: Counter[str] = Counter()
    for doc in lines:
        for rm in doc["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    for dp in metric["gauge"]["dataPoints"]:
                        attrs = {a["key"]: a["value"] for a in dp["attributes"]}
                        key = attrs.get("markov.key", {}).get("stringValue", metric["name"])
                        counts[key] += 1
    return counts


def as_collector_would(server: Backend, lines: list[dict[str, Any]]) -> None:
    """POST the lines with no Idempotency-Key: OTLP-JSON three lines joined into one request,
    then protobuf with each metric's points cut in two, the later halves first."""
    headers = {**server.headers, "Content-Type": "application/json"}
    for at in range(0, len(lines), 3):
        joined = [rm for doc in lines[at : at + 3] for rm in doc["resourceMetrics"]]
        body = json.dumps({"resourceMetrics": joined}).encode()
        assert _post(server, body, headers) == 200
    headers["Content-Type"] = "application/x-protobuf"
    for half in (1, 0):
        for doc in lines:
            cut = json.loads(json.dumps(doc))
            for rm in cut["resourceMetrics"]:
                for sm in rm["scopeMetrics"]:
                    for metric in sm["metrics"]:
                        points = metric["gauge"]["dataPoints"]
                        middle = len(points) // 2
                        metric["gauge"]["dataPoints"] = points[middle:] if half else points[:middle]
            request = json_format.ParseDict(cut, ExportMetricsServiceRequest())
            assert _post(server, request.SerializeToString(), headers) == 200


def _post(server: Backend, body: bytes, headers: dict[str, str]) -> int:
    return httpx.post(
        server.url + "/v1/metrics", content=body, headers=headers, timeout=60
    ).status_code


def assert_each_point_once(server: Backend, recorder: ExperimentRecorder) -> None:
    """Every key holds exactly the run dir's points, each identity once; the count agrees."""
    rid = recorder.recording_id
    expected = expected_points(spool_lines(recorder.run_dir))
    assert expected[KEYS[0]] == expected[KEYS[1]] == N
    assert any(key.startswith("system.") for key in expected)  # points with attributes too
    for key, n in expected.items():
        stored = server.records(rid, key)
        assert len(stored) == n, key
        assert len({(p["step"], p["time_unix_nano"]) for p in stored}) == n, key
    assert [p["step"] for p in server.records(rid, KEYS[0])] == list(range(N))
    answer = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers)
    assert answer.json()["points"] == sum(expected.values())


@pytest.mark.slow
def test_a_run_sent_online_then_replayed_as_a_collector_would_then_synced_is_stored_once(
    server: Backend, monkeypatch: pytest.MonkeyPatch, with_system_metrics: None
) -> None:
    """Online, then every line again keyless and re-cut (JSON and protobuf), then `mkv sync`
    to the same backend by another of its names (acks are per URL: every line goes again)."""
    recorder = record(online_recorder(server.url, server.token, name="routes"))
    assert_each_point_once(server, recorder)
    as_collector_would(server, spool_lines(recorder.run_dir))
    monkeypatch.setenv("MARKOV_ENDPOINT", server.url.replace("127.0.0.1", "localhost"))
    monkeypatch.setenv("MARKOV_API_KEY", server.token)
    assert main(["sync", recorder.recording_id]) == 0
    assert_each_point_once(server, recorder)


@pytest.mark.slow
def test_an_offline_run_replayed_as_a_collector_would_and_then_synced_is_stored_once(
    server: Backend, monkeypatch: pytest.MonkeyPatch, with_system_metrics: None
) -> None:
    """The docs once warned of this: a run dir replayed through a collector, then `mkv sync`
    (whose keys the backend has never seen) stores each point once, the run's fields too."""
    recorder = record(
        ExperimentRecorder(
            "routes",
            recording_mode=RecordingMode.OFFLINE,
            batch_size=100,
            batch_processing_interval=0.05,
        )
    )
    as_collector_would(server, spool_lines(recorder.run_dir))
    monkeypatch.setenv("MARKOV_ENDPOINT", server.url)
    monkeypatch.setenv("MARKOV_API_KEY", server.token)
    assert main(["sync", recorder.recording_id]) == 0
    assert_each_point_once(server, recorder)
    answer = httpx.get(
        f"{server.url}/api/v1/recordings/{recorder.recording_id}",
        headers=server.headers,
    )
    assert answer.json()["status"] == "finished"
