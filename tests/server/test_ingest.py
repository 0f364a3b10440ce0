"""OTLP ingest into the real backend, over SQLite and PostgreSQL: encodings, idempotency, values."""

from __future__ import annotations

import gzip
import math

import httpx
from backend_fixture import Backend
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def post_metrics(server: Backend, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/metrics", content=body, headers={**server.headers, **headers}
    )


def records(server: Backend, recording_id: str, key: str) -> list[dict[str, object]]:
    url = f"{server.url}/api/v1/recordings/{recording_id}/records"
    answer = httpx.get(url, params={"key": key}, headers=server.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_json_batch_is_stored_with_steps_values_and_times(server: Backend) -> None:
    """An OTLP-JSON batch's points come back from the read API exactly, in step order."""
    rid, points = new_id(), series("loss", 50)
    answer = post_metrics(server, metrics_json_bytes(rid, points), **JSON)
    assert answer.status_code == 200 and answer.json() == {}
    got = records(server, rid, "loss")
    assert [(r["step"], r["value"], r["time_unix_nano"]) for r in got] == [
        (s, v, ns) for _, s, v, ns in points
    ]


def test_protobuf_batch_is_stored_and_answered_in_protobuf(server: Backend) -> None:
    """A protobuf batch is stored and the answer is an ExportMetricsServiceResponse."""
    rid = new_id()
    points = [*series("acc", 20), ("epoch", 0, 3, 1_700_000_000_000_000_000)]
    answer = post_metrics(server, metrics_protobuf(rid, points), **PROTOBUF)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-protobuf")
    assert not ExportMetricsServiceResponse.FromString(answer.content).HasField("partial_success")
    assert [r["value"] for r in records(server, rid, "acc")] == [i / 10 for i in range(20)]
    assert records(server, rid, "epoch")[0]["value"] == 3


def test_gzip_bodies_are_inflated(server: Backend) -> None:
    """A gzip Content-Encoding body (JSON and protobuf) is accepted and stored."""
    rid = new_id()
    body = gzip.compress(metrics_json_bytes(rid, series("a", 10)))
    assert post_metrics(server, body, **JSON, **{"Content-Encoding": "gzip"}).status_code == 200
    body = gzip.compress(metrics_protobuf(rid, series("b", 7)))
    assert post_metrics(server, body, **PROTOBUF, **{"Content-Encoding": "gzip"}).status_code == 200
    assert len(records(server, rid, "a")) == 10 and len(records(server, rid, "b")) == 7


def test_repeated_idempotency_keys_store_each_batch_once(server: Backend) -> None:
    """Five batches each sent three times (as a retrying sender would) store exactly N points."""
    rid = new_id()
    for seq in range(5):
        points = series("loss", 10, start_ns=1_700_000_000_000_000_000 + seq * 10**9)
        points = [(k, s + seq * 10, v, ns) for k, s, v, ns in points]
        for _ in range(3):
            key = {"Idempotency-Key": f"{rid}:metrics:{seq}"}
            assert (
                post_metrics(server, metrics_json_bytes(rid, points), **JSON, **key).status_code
                == 200
            )
    got = records(server, rid, "loss")
    assert [r["step"] for r in got] == list(range(50))
    recording = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers).json()
    assert recording["points"] == 50


def test_non_finite_values_round_trip_as_strings(server: Backend) -> None:
    """NaN, Infinity and -Infinity survive storage (SQLite makes NaN NULL) in both encodings."""
    rid = new_id()
    values = [math.nan, math.inf, -math.inf, 1.5]
    points = [("x", i, v, 1_700_000_000_000_000_000 + i) for i, v in enumerate(values)]
    assert post_metrics(server, metrics_json_bytes(rid, points), **JSON).status_code == 200
    pb_points = [("y", i, v, 1_700_000_000_000_000_000 + i) for i, v in enumerate(values)]
    assert post_metrics(server, metrics_protobuf(rid, pb_points), **PROTOBUF).status_code == 200
    expected = ["NaN", "Infinity", "-Infinity", 1.5]
    assert [r["value"] for r in records(server, rid, "x")] == expected
    assert [r["value"] for r in records(server, rid, "y")] == expected


def test_resource_attributes_register_and_update_the_recording(server: Backend) -> None:
    """An unknown recording id is registered from the resource; hparams/summary/status merge in."""
    rid = new_id()
    first = metrics_json_bytes(
        rid,
        series("loss", 3),
        **{
            "markov.recording.name": "run-a",
            "markov.project.id": "proj",
            "markov.hparam.lr": 0.1,
            "markov.status": "running",
        },
    )
    assert post_metrics(server, first, **JSON).status_code == 200
    last = metrics_json_bytes(
        rid,
        [],
        **{"markov.hparam.epochs": 3, "markov.summary.best": math.nan, "markov.status": "finished"},
    )
    assert post_metrics(server, last, **JSON).status_code == 200
    recording = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers).json()
    assert (recording["name"], recording["project_id"]) == ("run-a", "proj")
    assert recording["hyper_parameters"] == {"lr": 0.1, "epochs": 3}
    assert recording["summary"] == {"best": "NaN"}
    assert recording["status"] == "finished" and recording["keys"] == ["loss"]


def test_points_without_recording_id_are_reported_as_partial_success(server: Backend) -> None:
    """A resource without markov.recording.id is rejected point by point, not with an error."""
    body = metrics_json_bytes(new_id(), series("loss", 4))
    body = body.replace(b'"markov.recording.id"', b'"other.attr"')
    answer = post_metrics(server, body, **JSON)
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"]["rejectedDataPoints"] == "4"


def test_traces_and_logs_are_accepted_in_both_encodings(server: Backend) -> None:
    """Spans and log records of a recording are accepted (JSON and protobuf) and register it."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    rid = new_id()
    attrs = [{"key": "markov.recording.id", "value": {"stringValue": rid}}]
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "experiment run",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
    }
    doc = {
        "resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [{"spans": [span]}]}]
    }
    answer = httpx.post(f"{server.url}/v1/traces", json=doc, headers=server.headers)
    assert answer.status_code == 200 and answer.json() == {}
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    rl.resource.attributes.add(key="markov.recording.id").value.string_value = rid
    rl.scope_logs.add().log_records.add(event_name="markov.lifecycle", time_unix_nano=5)
    answer = httpx.post(
        f"{server.url}/v1/logs",
        content=logs.SerializeToString(),
        headers={**server.headers, **PROTOBUF},
    )
    assert answer.status_code == 200
    assert (
        httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers).status_code
        == 200
    )


def test_markov_key_sums_and_histograms(server: Backend) -> None:
    """markov.key names the record key; sum points are stored; histogram points are rejected."""
    rid = new_id()

    def point(step: int, key: str | None = None) -> dict[str, object]:
        attrs = [{"key": "markov.step", "value": {"intValue": str(step)}}]
        if key is not None:
            attrs.append({"key": "markov.key", "value": {"stringValue": key}})
        return {"timeUnixNano": str(step), "asDouble": 0.5, "attributes": attrs}

    metrics = [
        {
            "name": "k_1st_loss",
            "gauge": {"dataPoints": [point(0, "1st loss"), point(1, "1st loss")]},
        },
        {"name": "tokens", "sum": {"dataPoints": [point(0)], "isMonotonic": True}},
        {"name": "latency", "histogram": {"dataPoints": [{"count": "3"}, {"count": "1"}]}},
    ]
    resource = {"attributes": [{"key": "markov.recording.id", "value": {"stringValue": rid}}]}
    doc = {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": metrics}]}]}
    answer = httpx.post(f"{server.url}/v1/metrics", json=doc, headers=server.headers)
    assert answer.json()["partialSuccess"]["rejectedDataPoints"] == "2"
    assert [r["step"] for r in records(server, rid, "1st loss")] == [0, 1]
    assert records(server, rid, "k_1st_loss") == []
    assert len(records(server, rid, "tokens")) == 1


def test_a_metric_without_points_adds_no_key_in_either_encoding(server: Backend) -> None:
    """A gauge with no data points (an SDK's instrument that was never set) stores nothing:
    the recording lists only the keys that have points, over OTLP-JSON and protobuf alike."""
    for encoding, headers in (("json", JSON), ("protobuf", PROTOBUF)):
        rid = new_id()
        request = ExportMetricsServiceRequest.FromString(metrics_protobuf(rid, series("loss", 3)))
        request.resource_metrics[0].scope_metrics[0].metrics.add(name="empty").gauge.SetInParent()
        body = (
            request.SerializeToString()
            if encoding == "protobuf"
            else MessageToJson(request).encode()
        )
        assert post_metrics(server, body, **headers).status_code == 200
        recording = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers)
        assert recording.json()["keys"] == ["loss"], encoding


def test_a_batch_of_more_keys_than_one_lookup_takes_gets_every_series_once(
    server: Backend,
) -> None:
    """1,200 keys in one body (series ids are looked up 500 keys a statement), posted twice
    under new keys so the second finds every series made by the first: each key keeps its own
    two points, and the recording lists each key once."""
    rid = new_id()
    keys = [f"k{i:04d}" for i in range(1200)]
    for step in (0, 1):
        points = [(key, step, float(i) + step, 1_700_000_000_000_000_000 + step) for i, key in
                  enumerate(keys)]  # fmt: skip
        answer = post_metrics(server, metrics_json_bytes(rid, points), **JSON)
        assert answer.status_code == 200 and answer.json() == {}, answer.text
    for i in (0, 499, 500, 999, 1000, 1199):
        got = records(server, rid, keys[i])
        assert [(r["step"], r["value"]) for r in got] == [(0, float(i)), (1, float(i) + 1)]
    recording = httpx.get(f"{server.url}/api/v1/recordings/{rid}", headers=server.headers).json()
    assert recording["keys"] == keys and recording["points"] == 2400
