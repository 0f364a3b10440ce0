"""The fast path for common OTLP-JSON metrics bodies (otlp_json.py) against the general walk.

The fast path may decline any body (None: the general walk takes it), but a body it takes must
come out exactly as the general walk reads it: the same resource attributes, the same columns
(keys, steps, values to the bit, times), the same refusal with the same message.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hostile_requests import Spoiler, dumps, metrics_doc, resource
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from markov_otel.errors import ConfigError
from markov_otel.otel.encoding import MetricsEncoder, attributes_json
from markov_otel.otel.resource import experiment_attributes
from markov_otel.server.bodies import JSON, MalformedBody
from markov_otel.server.otlp import Batch, parse_metrics
from markov_otel.server.otlp_json import parse_common

CHECK = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(parse: Any) -> tuple[Any, ...]:
    """What ingest sees of a parse: every resource's attributes and columns, or the refusal."""
    try:
        batch: Batch = parse()
        resources = [
            (repr(rb.attributes), [repr((c.key, c.steps, c.values, c.times)) for c in rb.points])
            for rb in batch.resources
        ]
        return ("stored", resources, batch.rejected, batch.reasons)
    except (MalformedBody, ConfigError) as exc:
        return ("refused", type(exc).__name__, str(exc))


def same_as_general_walk(body: bytes) -> bool:
    """True when the fast path took the body; either way, a taken body reads as the walk's."""
    fast = parse_common(body)
    if fast is None:
        return False
    assert outcome(lambda: fast) == outcome(lambda: parse_metrics(body, JSON))
    return True


def recorder_body(records: int) -> bytes:
    """A spool line as the recorder writes it: 4 keys, consecutive steps."""
    info = {"recording_id": "fast-path-0001", "name": "n", "project_id": "p", "status": "running"}
    resource_json = attributes_json(experiment_attributes(info))
    t0 = time.time_ns()
    batch = [
        (t0 + s, s, {"loss": 1 / (s + 1), "acc": s / 7, "lr": 0.1, "g": -s}) for s in range(records)
    ]
    line, _ = MetricsEncoder().encode(batch, resource_json)
    return line if isinstance(line, bytes) else line.encode()


def test_the_recorders_bodies_take_the_fast_path_and_read_as_the_walk_reads_them() -> None:
    """A spool line of 4 keys x 500 records is taken by the fast path, with 2,000 points."""
    body = recorder_body(500)
    assert same_as_general_walk(body)
    fast = parse_common(body)
    assert fast is not None
    columns = [c for rb in fast.resources for c in rb.points]
    assert sorted(c.key for c in columns) == ["acc", "g", "loss", "lr"]
    assert sum(len(c.steps) for c in columns) == 2000
    assert fast.resources[0].attributes["markov.recording.id"] == "fast-path-0001"


NEAR_MISSES: dict[str, Any] = {
    "steps": ["7", " 7", "+7", "7_0", "١٢", "", "1.5", "0x10", 7, 7.0, "9" * 30, None],
    "times": ["1700000000000000000", "0", "", "-1", "18446744073709551616", 5, None, "1e3"],
    "values": [0.5, -0.0, 5, 2**70, True, None, "NaN", "Infinity", "1", 1e308, 5e-324],
    "keys": ["markov.step", "markov.key", "markov.step ", None],
    "names": ["loss", "a/b", "", "x" * 300, "\x00", 5, None],
    "ints": ["-5", str(2**63), str(-(2**63) - 1), " 3", "1.0", 3, "", None],
}


@st.composite
def near_common_doc(draw: st.DrawFn) -> dict[str, Any]:
    """A common-shape body whose fields are sometimes a near miss (see NEAR_MISSES)."""

    def pick(field: str, good: Any) -> Any:
        return draw(st.sampled_from(NEAR_MISSES[field])) if draw(st.integers(0, 9)) == 0 else good

    metrics = []
    for n in range(draw(st.integers(1, 3))):
        points = []
        for step in range(draw(st.integers(0, 4))):
            attrs = [
                {
                    "key": pick("keys", "markov.step"),
                    "value": {"intValue": pick("steps", str(step))},
                }
            ]
            if draw(st.integers(0, 19)) == 0:
                attrs.append({"key": "markov.key", "value": {"stringValue": "other"}})
            point = {"timeUnixNano": pick("times", str(1_700_000_000 + step)), "attributes": attrs}
            if n == 1 or draw(st.integers(0, 19)) == 0:  # metric m1 holds ints (some doubles)
                point["asInt"] = pick("ints", str(draw(st.integers(-(2**63), 2**63 - 1))))
            if n != 1 or draw(st.integers(0, 19)) == 0:
                value = pick("values", draw(st.floats(allow_nan=False, allow_infinity=False)))
                point.update({} if value is None else {"asDouble": value})
            points.append(point)
        kinds = draw(st.sampled_from([["gauge"], ["sum"], ["gauge", "sum"], ["histogram"], []]))
        data = draw(st.sampled_from([{"dataPoints": points}] * 8 + [None, {}]))
        metrics.append({"name": pick("names", f"m{n}"), **dict.fromkeys(kinds, data)})
    rm: dict[str, Any] = {
        "resource": resource(Spoiler(draw)),
        "scopeMetrics": [{"metrics": metrics}],
    }
    if draw(st.integers(0, 9)) == 0:
        rm[draw(st.sampled_from(["resource", "scopeMetrics"]))] = None
    return {"resourceMetrics": [rm] * draw(st.integers(0, 2))}


@CHECK
@given(near_common_doc().map(dumps))
def test_near_misses_of_the_common_shape_read_as_the_general_walk_reads_them(body: bytes) -> None:
    """Steps as " 7" or JSON ints, odd times, asInt past int64, ints and non-finite values,
    extra attributes, null or doubled metric data, bad names: declined, or read as the walk."""
    event("fast path" if same_as_general_walk(body) else "declined")


@CHECK
@given(metrics_doc().map(dumps))
def test_hostile_metrics_bodies_read_as_the_general_walk_reads_them(body: bytes) -> None:
    """The fuzz tests' metrics bodies (one hostile field each): declined, or read as the walk."""
    event("fast path" if same_as_general_walk(body) else "declined")


def test_near_misses_that_the_fast_path_takes_include_refusals() -> None:
    """The fast path refuses with the rules' message where the walk does (a bad key, a step
    past int64), and declines a body the walk refuses as malformed ("1.5" as a step)."""
    body = json.loads(recorder_body(3))
    metric = body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    metric["name"] = "bad\x00key"
    assert same_as_general_walk(json.dumps(body).encode())
    assert outcome(lambda: parse_common(json.dumps(body).encode()))[0] == "refused"
    metric["name"] = "loss"
    metric["gauge"]["dataPoints"][0]["attributes"][0]["value"]["intValue"] = str(2**63)
    assert same_as_general_walk(json.dumps(body).encode())
    assert "step" in outcome(lambda: parse_common(json.dumps(body).encode()))[2]
    metric["gauge"]["dataPoints"][0]["attributes"][0]["value"]["intValue"] = "1.5"
    assert parse_common(json.dumps(body).encode()) is None
    assert outcome(lambda: parse_metrics(json.dumps(body).encode(), JSON))[0] == "refused"
