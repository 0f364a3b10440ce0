"""Hostile input answers 4xx with a reason, never 500, and never poisons a read for anyone.

Each case here answered 500 before the backend applied `markov_otel.rules` (issue 10): a 5xx
tells a sender to retry, so each one would also have blocked a run's upload forever.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_bodies import metrics_json, metrics_json_bytes, metrics_protobuf, new_id, series

from markov_otel.rules import MAX_DEPTH, MAX_NAME_BYTES

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
DEEP_ARRAY = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000


def post(server: Backend, path: str, body: bytes, ctype: dict[str, str] = JSON) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers={**server.headers, **ctype})


def api(server: Backend, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.url}/api/v1{path}", headers=server.headers, **kwargs)


def error_of(answer: httpx.Response) -> str:
    """The reason of a JSON refusal (REST: "error"; OTLP: "message")."""
    doc = answer.json()
    return str(doc.get("message") or doc["error"])


def nested(depth: int) -> dict[str, Any]:
    """{"a": {"a": … {}}} nested `depth` levels."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def assert_lists_still_work(server: Backend) -> None:
    answer = api(server, "GET", "/recordings")
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_json_is_400_on_every_route_that_takes_json(
    server: Backend, body: bytes
) -> None:
    """`[` or `{"a":` nested 100,000 deep answers 400 on /v1/* and the REST routes."""
    rid = new_id()
    assert api(server, "POST", "/recordings", json={"recording_id": rid}).status_code == 201
    calls = [("POST", f"/v1/{s}") for s in ("metrics", "traces", "logs")]
    calls += [("POST", "/api/v1/recordings"), ("PATCH", f"/api/v1/recordings/{rid}")]
    for method, path in calls:
        answer = httpx.request(
            method, server.url + path, content=body, headers={**server.headers, **JSON}
        )
        assert answer.status_code == 400, (method, path, answer.status_code)
        assert "nested" in error_of(answer), (path, answer.text)
    assert_lists_still_work(server)


@pytest.mark.parametrize(
    ("step", "time_ns", "needle"),
    [
        (2**63, 1, "step"),
        (-(2**63) - 1, 1, "step"),
        (1, 2**63, "timeUnixNano"),
        (1, 2**64, "timeUnixNano"),
        (1, -1, "timeUnixNano"),
    ],
)
def test_steps_and_times_outside_int64_are_400(
    server: Backend, step: int, time_ns: int, needle: str
) -> None:
    """markov.step outside int64 and timeUnixNano outside 0..2**63-1 are 400 naming the field."""
    rid = new_id()
    answer = post(server, "/v1/metrics", metrics_json_bytes(rid, [("x", step, 1.0, time_ns)]))
    assert answer.status_code == 400, answer.text
    assert needle in error_of(answer)
    assert api(server, "GET", f"/recordings/{rid}").status_code == 404  # nothing stored


def test_protobuf_times_past_int64_are_400(server: Backend) -> None:
    """A protobuf uint64 timeUnixNano of 2**63 or more answers 400 (a protobuf Status)."""
    from google.rpc.status_pb2 import Status

    rid = new_id()
    for time_ns in (2**63, 2**64 - 1):
        body = metrics_protobuf(rid, [("x", 1, 1.0, time_ns)])
        answer = post(server, "/v1/metrics", body, PROTOBUF)
        assert answer.status_code == 400
        assert "timeUnixNano" in Status.FromString(answer.content).message
    for signal, request in (("traces", ExportTraceServiceRequest()), ("logs", None)):
        if request is not None:
            rs = request.resource_spans.add()
            rs.resource.attributes.add(key="markov.recording.id").value.string_value = rid
            rs.scope_spans.add().spans.add(name="s", start_time_unix_nano=2**64 - 1)
        else:
            request = ExportLogsServiceRequest()
            rl = request.resource_logs.add()
            rl.resource.attributes.add(key="markov.recording.id").value.string_value = rid
            rl.scope_logs.add().log_records.add(event_name="e", time_unix_nano=2**63)
        answer = post(server, f"/v1/{signal}", request.SerializeToString(), PROTOBUF)
        assert answer.status_code == 400, signal
    assert api(server, "GET", f"/recordings/{rid}").status_code == 404


def test_point_int_values_outside_int64_are_400(server: Backend) -> None:
    """An asInt beyond int64 (OTLP's sfixed64) answers 400, not a database overflow."""
    doc = metrics_json(new_id(), [("x", 0, 1, 5)])
    dp = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    dp["asInt"] = str(2**63)
    answer = post(server, "/v1/metrics", json.dumps(doc).encode())
    assert answer.status_code == 400 and "asInt" in error_of(answer)


def test_protobuf_strings_that_are_not_utf8_are_400(server: Backend) -> None:
    """A protobuf string field holding bytes that are not UTF-8 answers 400."""
    rid = new_id()
    body = metrics_protobuf(rid, series("abc", 1)).replace(b"abc", b"a\xffc")
    answer = post(server, "/v1/metrics", body, PROTOBUF)
    assert answer.status_code == 400
    assert api(server, "GET", f"/recordings/{rid}").status_code == 404


LONE = "\udc80"


def test_lone_surrogates_in_keys_and_names_are_400(server: Backend) -> None:
    """A lone surrogate (valid JSON, not UTF-8) in a key, name or field answers 400 everywhere."""
    rid = new_id()
    cases = [
        metrics_json_bytes(rid, [(f"loss{LONE}", 0, 1.0, 5)]),
        metrics_json_bytes(rid, series("x", 1), **{"markov.recording.name": LONE}),
        metrics_json_bytes(rid, series("x", 1), **{f"markov.hparam.{LONE}": 1}),
        metrics_json_bytes(rid, series("x", 1), **{"markov.project.id": f"p{LONE}"}),
    ]
    for body in cases:
        answer = post(server, "/v1/metrics", body)
        assert answer.status_code == 400, answer.text
        assert "surrogate" in error_of(answer)
    span = {"traceId": "00" * 16, "spanId": "00" * 8, "name": LONE, "startTimeUnixNano": "1"}
    attrs = [{"key": "markov.recording.id", "value": {"stringValue": rid}}]
    doc = {
        "resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [{"spans": [span]}]}]
    }
    assert post(server, "/v1/traces", json.dumps(doc).encode()).status_code == 400
    bodies = [
        {"recording_id": rid, "name": LONE},
        {"recording_id": rid, "notes": LONE},
        {"recording_id": rid, "hyper_parameters": {LONE: 1}},
        {"recording_id": rid, "metadata": {"k": LONE}},
    ]
    for body in bodies:
        answer = api(server, "POST", "/recordings", content=json.dumps(body).encode())
        assert answer.status_code == 400 and "surrogate" in error_of(answer), body
    assert api(server, "GET", f"/recordings/{rid}").status_code == 404
    assert api(server, "POST", "/recordings", json={"recording_id": rid}).status_code == 201
    patches = [
        {"status": LONE},
        {"summary": {LONE: 1.0}},
        {"alerts": [{"alert_id": LONE}]},
        {"alerts": [{"alert_id": "a", "metric_name": LONE}]},
    ]
    for body in patches:
        answer = api(server, "PATCH", f"/recordings/{rid}", content=json.dumps(body).encode())
        assert answer.status_code == 400 and "surrogate" in error_of(answer), body
    assert_lists_still_work(server)


def test_metadata_nested_deeper_than_the_rule_is_400_and_reads_stay_up(server: Backend) -> None:
    """Metadata nested 600 deep (or MAX_DEPTH + 1) is refused; the list answers 200 after."""
    for depth in (600, MAX_DEPTH + 1):
        for field in ("metadata", "hyper_parameters"):
            body = {"recording_id": new_id(), field: nested(depth)}
            answer = api(server, "POST", "/recordings", content=json.dumps(body).encode())
            assert answer.status_code == 400, (depth, field, answer.status_code)
            assert "nested" in error_of(answer)
    rid = new_id()
    assert api(server, "POST", "/recordings", json={"recording_id": rid}).status_code == 201
    for field in ("summary", "metadata", "hyper_parameters", "requirements"):
        body = json.dumps({field: nested(600)}).encode()
        answer = api(server, "PATCH", f"/recordings/{rid}", content=body)
        assert answer.status_code == 400, (field, answer.status_code)
    body = json.dumps({"alerts": [{"alert_id": "a", "extra": nested(600)}]}).encode()
    assert api(server, "PATCH", f"/recordings/{rid}", content=body).status_code == 400
    answer = api(server, "PATCH", f"/recordings/{rid}", json={"metadata": nested(MAX_DEPTH)})
    assert answer.status_code == 200  # exactly at the rule: stored
    assert_lists_still_work(server)
    assert api(server, "GET", f"/recordings/{rid}").status_code == 200


def test_parameters_over_the_size_rule_are_400(server: Backend) -> None:
    """hyper_parameters over MAX_PARAMS_BYTES as JSON are refused with the limit named."""
    from markov_otel.rules import MAX_PARAMS_BYTES

    big = {f"k{i}": "x" * 1000 for i in range(MAX_PARAMS_BYTES // 1000 + 2)}
    body = {"recording_id": new_id(), "hyper_parameters": big}
    answer = api(server, "POST", "/recordings", content=json.dumps(body).encode())
    assert answer.status_code == 400 and str(MAX_PARAMS_BYTES) in error_of(answer)


def test_ids_names_and_keys_follow_the_shared_rules(server: Backend) -> None:
    """ "a\\n" is not an id; a name or key past MAX_NAME_BYTES is 400; so is an empty key."""
    answer = api(server, "POST", "/recordings", json={"recording_id": "a\n"})
    assert answer.status_code == 400 and "recording id" in error_of(answer)
    answer = post(server, "/v1/metrics", metrics_json_bytes("a\n", series("x", 1)))
    assert answer.status_code in (200, 400)
    if answer.status_code == 200:
        assert answer.json()["partialSuccess"]["rejectedDataPoints"] == "1"
    assert "a\n" not in {r["recording_id"] for r in api(server, "GET", "/recordings").json()}
    long = "n" * (MAX_NAME_BYTES + 1)
    answer = api(server, "POST", "/recordings", json={"recording_id": new_id(), "name": long})
    assert answer.status_code == 400 and str(MAX_NAME_BYTES) in error_of(answer)
    rid = new_id()
    for key in (long, ""):
        answer = post(server, "/v1/metrics", metrics_json_bytes(rid, [(key, 0, 1.0, 5)]))
        assert answer.status_code == 400, key[:10]
    assert api(server, "POST", "/recordings", json={"recording_id": rid}).status_code == 201
    answer = api(server, "GET", f"/recordings/{rid}/records", params={"key": long})
    assert answer.status_code == 400
    answer = api(server, "GET", "/recordings", params={"project_id": long})
    assert answer.status_code == 400
