"""Hypothesis strategies for requests to the backend: well-formed bodies with one hostile field,
and anything at all.

A body whose every field may be hostile is refused at its first bad field, so the deep code
(the rules on later fields, the store, the reads) is never reached. Documents here are drawn
valid except at most one field, picked at random by a `Spoiler`: that one field is drawn from
its hostile strategy (numbers past int64, lone surrogates, NUL, over-long text, deep nesting,
times that are not ISO 8601, ids of another project).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

MINE, THEIRS = "a" + uuid.uuid4().hex[:20], "b" + uuid.uuid4().hex[:20]
"""Recordings the fuzz harness registers first: MINE in projA (the scoped token's), THEIRS not."""
PROJECT = "projA"

# -- values ------------------------------------------------------------------------------------
hostile_text = st.sampled_from(
    ["", "\x00", "\udc80", "a\n", "..", "../x", "x" * 1100, "é" * 600, "' OR 1=1 --", "%00"]
)
any_text = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs", "L", "N", "P", "Cc"]), max_size=10),
    hostile_text,
)
good_text = st.text(st.characters(categories=["L", "N"], max_codepoint=0x2FF), min_size=1,
                    max_size=12)  # fmt: skip
edge_ints = st.sampled_from(
    [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]
)
wide_int = st.one_of(edge_ints, st.integers(-(2**70), 2**70))
json_number = st.one_of(wide_int, st.floats(allow_nan=True, allow_infinity=True))
json_scalar = st.one_of(st.none(), st.booleans(), json_number, any_text)
any_json = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=25,
)
deep_json = st.builds(lambda n: json.loads('{"a":' * n + "1" + "}" * n), st.integers(17, 900))
deep_bytes = st.builds(
    lambda unit, n: unit * n, st.sampled_from([b"[", b'{"a":']), st.sampled_from([2000, 100_000])
)
writable_id = st.one_of(st.just(MINE), st.builds(lambda: uuid.uuid4().hex))
valid_time = st.integers(0, 2**63 - 1)
iso = st.just("2025-05-01T05:09:00Z") | st.just("2025-05-01T07:09:00.5+02:00")
# Hostile by construction: hypothesis shrinks toward the simplest value of a strategy (0, "",
# the first listed), so a strategy that can also draw valid values mostly draws those.
bad_text = st.one_of(
    st.sampled_from(["\udc80", "\x00", "", "x" * 1100, "é" * 600, "a\udc80b", "n\x00"]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
)
hostile_id = st.one_of(st.just(THEIRS), bad_text, st.sampled_from(["a\n", "..", "a/b", "-x"]))
too_big = st.one_of(
    st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.integers(2**63, 2**80),
    st.integers(-(2**80), -(2**63) - 1),
)
int_text = st.one_of(
    too_big.map(str), too_big, st.sampled_from(["", "x", "1e3", "0x10", "NaN"]),
    st.sampled_from([float("inf"), float("nan"), None, True, [], {}]),
)  # fmt: skip
bad_time = st.one_of(int_text, st.integers(max_value=-1).map(str))
bad_iso = st.one_of(
    st.sampled_from(["2025-05-01T05:09:00", "yesterday", "", "2025-13-01T00:00:00Z"]),
    bad_text, st.sampled_from([0, 1.5, None, [], {}]),
)  # fmt: skip
plain_params = st.recursive(
    st.one_of(st.floats(allow_nan=False), st.integers(-100, 100), good_text, st.booleans()),
    lambda inner: st.dictionaries(good_text, inner, min_size=1, max_size=3),
    max_leaves=6,
)
hostile_params = st.one_of(
    deep_json, st.dictionaries(bad_text, any_json, min_size=1, max_size=3),
    st.just({"a.b": 1, "a": {"b": 2}}), st.just({"big": "x" * (1 << 20)}),
    st.dictionaries(good_text, bad_text, min_size=1, max_size=2), any_json,
)  # fmt: skip


class Spoiler:
    """Draws each field valid, except field number `target` (if reached), drawn hostile."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw, self.count = draw, 0
        self.target = draw(st.integers(0, 24))  # 0, or beyond the last field: nothing hostile

    def __call__(self, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
        self.count += 1
        return self.draw(hostile if self.count == self.target else valid)


# -- OTLP-JSON ---------------------------------------------------------------------------------
def kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": value}


plain_value = st.one_of(
    good_text.map(lambda v: {"stringValue": v}),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: {"intValue": str(v)}),
    st.floats(allow_nan=False).map(lambda v: {"doubleValue": v}),
    st.booleans().map(lambda v: {"boolValue": v}),
)
hostile_value: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        bad_text.map(lambda v: {"stringValue": v}),
        int_text.map(lambda v: {"intValue": v}),
        st.sampled_from(["x", "", None, []]).map(lambda v: {"doubleValue": v}),
        st.just({}),
        json_scalar,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: {"arrayValue": {"values": vs}}),
        st.lists(st.tuples(bad_text | good_text, inner), min_size=1, max_size=3).map(
            lambda kvs: {"kvlistValue": {"values": [kv(k, v) for k, v in kvs]}}
        ),
    ),
    max_leaves=10,
)
RESOURCE_KEYS = ["markov.recording.name", "markov.notes", "markov.status", "markov.hparam.lr",
                 "markov.hparam.opt.name", "markov.metadata.a", "markov.summary.best",
                 "markov.model.id", "service.name", "markov.dataset.id"]  # fmt: skip


def resource(spoil: Spoiler) -> dict[str, Any]:
    """A resource naming a recording the request may write, and a few markov.* attributes."""
    attrs = [
        kv("markov.recording.id", {"stringValue": spoil(writable_id, hostile_id)}),
        kv("markov.project.id", {"stringValue": spoil(st.just(PROJECT), bad_text)}),
    ]
    for key in spoil.draw(st.lists(st.sampled_from(RESOURCE_KEYS), max_size=3, unique=True)):
        attrs.append(kv(spoil(st.just(key), bad_text), spoil(plain_value, hostile_value)))
    for key in ("markov.recording.started_at", "markov.recording.ended_at"):
        if spoil.draw(st.booleans()):
            attrs.append(kv(key, {"stringValue": spoil(iso, bad_iso)}))
    return {"attributes": attrs}


def data_point(spoil: Spoiler) -> dict[str, Any]:
    attrs = [kv("markov.step", {"intValue": spoil(st.integers(-5, 10**6).map(str), int_text)})]
    if spoil.draw(st.booleans()):
        attrs.append(kv("markov.key", {"stringValue": spoil(good_text, bad_text)}))
    point = {"timeUnixNano": spoil(valid_time.map(str), bad_time), "attributes": attrs}
    if spoil.draw(st.booleans()):
        point["asDouble"] = spoil(st.floats(allow_nan=False), st.sampled_from(["x", "", None, []]))
    else:
        point["asInt"] = spoil(st.integers(-(2**63), 2**63 - 1).map(str), int_text)
    return point


@st.composite
def metrics_doc(draw: st.DrawFn) -> dict[str, Any]:
    spoil = Spoiler(draw)
    metrics = []
    for _ in range(draw(st.integers(1, 3))):
        kind = spoil(st.sampled_from(["gauge", "sum"]), st.sampled_from(["histogram", "summary"]))
        points = [data_point(spoil) for _ in range(draw(st.integers(1, 4)))]
        metrics.append({"name": spoil(good_text, bad_text), kind: {"dataPoints": points}})
    scope = {"scope": {"name": "markov_otel"}, "metrics": metrics}
    return {"resourceMetrics": [{"resource": resource(spoil), "scopeMetrics": [scope]}]}


def event_attributes(spoil: Spoiler) -> list[dict[str, Any]]:
    n = spoil.draw(st.integers(0, 3))
    return [kv(spoil(good_text, bad_text), spoil(plain_value, hostile_value)) for _ in range(n)]


@st.composite
def traces_doc(draw: st.DrawFn) -> dict[str, Any]:
    spoil = Spoiler(draw)
    spans = []
    for _ in range(draw(st.integers(1, 3))):
        time = spoil(valid_time.map(str), bad_time)
        event = {"name": spoil(good_text, bad_text),
                 "timeUnixNano": spoil(valid_time.map(str), bad_time)}  # fmt: skip
        spans.append({"traceId": "ab" * 16, "spanId": "cd" * 8, "name": spoil(good_text, bad_text),
                      "startTimeUnixNano": time, "endTimeUnixNano": time,
                      "attributes": event_attributes(spoil), "events": [event]})  # fmt: skip
    return {"resourceSpans": [{"resource": resource(spoil), "scopeSpans": [{"spans": spans}]}]}


@st.composite
def logs_doc(draw: st.DrawFn) -> dict[str, Any]:
    spoil = Spoiler(draw)
    records = [
        {"timeUnixNano": spoil(valid_time.map(str), bad_time),
         "eventName": spoil(good_text, bad_text), "body": spoil(plain_value, hostile_value),
         "attributes": event_attributes(spoil)}
        for _ in range(draw(st.integers(1, 3)))
    ]  # fmt: skip
    return {"resourceLogs": [{"resource": resource(spoil), "scopeLogs": [{"logRecords": records}]}]}


# -- REST bodies -------------------------------------------------------------------------------
def alert(spoil: Spoiler) -> dict[str, Any]:
    return {
        "alert_id": spoil(good_text, bad_text),
        "metric_name": spoil(good_text, any_json),
        "operation": "gt",
        "threshold": spoil(st.floats(allow_nan=False), st.sampled_from(["x", None, [], True])),
        "value": spoil(st.floats(), st.sampled_from(["x", None, {}])),
        "step": spoil(st.integers(0, 100), too_big | st.sampled_from([1.5, "1", None])),
        "time_unix_nano": spoil(valid_time, too_big | st.integers(max_value=-1)),
        "text": spoil(good_text, any_json),
        "extra": spoil(good_text, deep_json),
    }


@st.composite
def registration(draw: st.DrawFn) -> dict[str, Any]:
    spoil = Spoiler(draw)
    doc = {"recording_id": spoil(writable_id, hostile_id)}
    doc["project_id"] = spoil(st.just(PROJECT), bad_text | any_json)
    for name in ("name", "notes", "dataset_id", "model_class", "model_id"):
        if draw(st.booleans()):
            doc[name] = spoil(good_text, bad_text | any_json)
    for name in ("metadata", "hyper_parameters"):
        doc[name] = spoil(plain_params, hostile_params)
    for name in ("started_at", "ended_at"):
        if draw(st.booleans()):
            doc[name] = spoil(iso, bad_iso)
    return doc


@st.composite
def patch(draw: st.DrawFn) -> dict[str, Any]:
    spoil = Spoiler(draw)
    doc: dict[str, Any] = {}
    for name in ("hyper_parameters", "summary", "metadata", "requirements"):
        if draw(st.booleans()):
            doc[name] = spoil(plain_params, hostile_params)
    if draw(st.booleans()):
        doc["status"] = spoil(st.sampled_from(["running", "finished", "failed"]), bad_text)
    if draw(st.booleans()):
        doc["notes"] = spoil(good_text, bad_text | any_json)
    for name in ("started_at", "ended_at"):
        if draw(st.booleans()):
            doc[name] = spoil(iso, bad_iso)
    if draw(st.booleans()):
        doc["alerts"] = [alert(spoil) for _ in range(draw(st.integers(1, 2)))]
    return doc


# -- protobuf ----------------------------------------------------------------------------------
proto_text = st.sampled_from(["", "\x00", "x" * 1100, "a\x00b"])  # protobuf strings are UTF-8
valid_uint64 = valid_time
hostile_uint64 = st.sampled_from([2**63, 2**64 - 1]) | st.integers(2**63, 2**64 - 1)


def proto_resource(message: Any, spoil: Spoiler) -> None:
    attrs = message.attributes
    attrs.add(key="markov.recording.id").value.string_value = spoil(writable_id, proto_text)
    attrs.add(key="markov.project.id").value.string_value = spoil(st.just(PROJECT), proto_text)
    for key in spoil.draw(st.lists(st.sampled_from(RESOURCE_KEYS), max_size=2, unique=True)):
        attrs.add(key=key).value.CopyFrom(spoil(proto_value(good_text), proto_value(proto_text)))


@st.composite
def proto_value(draw: st.DrawFn, text: st.SearchStrategy[str]) -> AnyValue:
    kind = draw(st.sampled_from(["s", "i", "d", "kv"]))
    if kind == "s":
        return AnyValue(string_value=draw(text))
    if kind == "i":
        return AnyValue(int_value=draw(st.integers(-(2**63), 2**63 - 1)))
    if kind == "d":
        return AnyValue(double_value=draw(st.floats()))
    value = AnyValue()
    value.kvlist_value.values.add(key=draw(text)).value.string_value = draw(text)
    return value


@st.composite
def metrics_proto(draw: st.DrawFn) -> bytes:
    spoil = Spoiler(draw)
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    proto_resource(rm.resource, spoil)
    metric = rm.scope_metrics.add().metrics.add(name=spoil(good_text, proto_text))
    for _ in range(draw(st.integers(1, 5))):
        dp = metric.gauge.data_points.add(time_unix_nano=spoil(valid_uint64, hostile_uint64))
        dp.as_double = draw(st.floats())
        dp.attributes.add(key="markov.step").value.int_value = draw(
            st.integers(-(2**63), 2**63 - 1)
        )
        if draw(st.booleans()):
            dp.attributes.add(key="markov.key").value.string_value = spoil(good_text, proto_text)
    return request.SerializeToString()


@st.composite
def events_proto(draw: st.DrawFn) -> bytes:
    spoil = Spoiler(draw)
    time, name = spoil(valid_uint64, hostile_uint64), spoil(good_text, proto_text)
    if draw(st.booleans()):
        traces = ExportTraceServiceRequest()
        rs = traces.resource_spans.add()
        proto_resource(rs.resource, spoil)
        rs.scope_spans.add().spans.add(name=name, start_time_unix_nano=time)
        return traces.SerializeToString()
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    proto_resource(rl.resource, spoil)
    rl.scope_logs.add().log_records.add(event_name=name, time_unix_nano=time)
    return logs.SerializeToString()


@st.composite
def flipped(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes overwritten."""
    data = bytearray(draw(inner))
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def dumps(doc: Any) -> bytes:
    """JSON as a hostile client may write it: bare NaN tokens allowed, surrogates escaped."""
    return json.dumps(doc).encode()


# -- where each goes ---------------------------------------------------------------------------
JSON, PROTOBUF = "application/json", "application/x-protobuf"
WRITES: dict[str, tuple[str, str, st.SearchStrategy[bytes]]] = {
    "metrics json": ("POST", "/v1/metrics", metrics_doc().map(dumps)),
    "metrics protobuf": ("POST", "/v1/metrics", metrics_proto()),
    "metrics protobuf, bytes flipped": ("POST", "/v1/metrics", flipped(metrics_proto())),
    "traces json": ("POST", "/v1/traces", traces_doc().map(dumps)),
    "logs json": ("POST", "/v1/logs", logs_doc().map(dumps)),
    "traces/logs protobuf": ("POST", "/v1/traces", events_proto()),
    "register": ("POST", "/api/v1/recordings", registration().map(dumps)),
    "patch": ("PATCH", f"/api/v1/recordings/{MINE}", patch().map(dumps)),
    "deep json, metrics": ("POST", "/v1/metrics", deep_bytes),
    "deep json, register": ("POST", "/api/v1/recordings", deep_bytes),
    "deep json, patch": ("PATCH", f"/api/v1/recordings/{MINE}", deep_bytes),
}
"""name -> (method, path, body); protobuf bodies are the ones whose name says so."""
WEIGHTED_WRITES = sorted(WRITES) + 4 * ["metrics json"] + 2 * ["register", "patch", "logs json"]
"""The kinds with the most fields (so the most places for a hostile value) drawn more often."""
any_body = st.one_of(
    st.binary(max_size=300), any_json.map(dumps), deep_bytes,
    *(body for _, _, body in WRITES.values()),
)  # fmt: skip
