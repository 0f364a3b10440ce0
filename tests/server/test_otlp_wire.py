"""The fast path for common protobuf metrics (otlp_wire.py) against the wrapper walk of otlp.py.

The fast path may decline any metric (None: the walk takes it), but a metric it takes must come
out exactly as the walk reads it: the same steps, the same values to the bit, the same times.
And it must take the common metric, as the recorder and an OTel SDK send it.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint

from markov_otel.server.otlp import _proto_columns
from markov_otel.server.otlp_wire import MAX_RUNS, wire_points

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


@st.composite
def points(draw: Any) -> NumberDataPoint:
    """Mostly common points (time, as_double, markov.step), now and then anything else."""
    odd = draw(st.integers(0, 9)) == 0
    dp = NumberDataPoint(time_unix_nano=draw(UINT64 if odd else st.integers(1, 2**64 - 1)))
    if draw(st.booleans()):
        dp.start_time_unix_nano = draw(UINT64)
    value = draw(
        st.sampled_from(["double", "double", "double", "int", "none"] if odd else ["double"])
    )
    if value == "double":
        dp.as_double = draw(st.floats(allow_nan=True, allow_infinity=True))
    elif value == "int":
        dp.as_int = draw(INT64)
    step = AnyValue(int_value=draw(INT64))
    if odd and draw(st.booleans()):
        step = AnyValue(string_value=str(draw(INT64)))
    dp.attributes.append(KeyValue(key="markov.step", value=step))
    if odd and draw(st.booleans()):
        dp.attributes.append(KeyValue(key="rank", value=AnyValue(int_value=1)))
    if odd and draw(st.booleans()):
        dp.flags = 1
    return dp


def metric(kind: str, dps: list[NumberDataPoint]) -> Metric:
    m = Metric(name="loss")
    data = getattr(m, kind)
    data.SetInParent()
    data.data_points.extend(dps)
    if kind == "sum":
        m.sum.aggregation_temporality = 2
        m.sum.is_monotonic = True
    return m


def bits(values: list[Any]) -> list[Any]:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["gauge", "sum"]), st.lists(points(), max_size=40))
def test_a_metric_the_fast_path_takes_reads_as_the_walk_reads_it(
    kind: str, dps: list[NumberDataPoint]
) -> None:
    m = metric(kind, dps)
    data = getattr(m, kind)
    fast = wire_points(data, len(data.data_points))
    event("taken" if fast is not None else "declined")
    if fast is None:
        return
    walk = _proto_columns(m.name, data.data_points)
    assert walk is not None  # what the fast path takes, the column walk takes too
    steps, values, times = fast
    assert (steps, bits(values), times) == (walk.steps, bits(walk.values), walk.times)


def test_the_common_metric_takes_the_fast_path_with_or_without_start_times() -> None:
    """The recorder's points (no start time) and an SDK gauge's or sum's (start time set), steps
    of every varint length and below zero: all read off the bytes, exactly."""
    steps = [0, 1, 127, 128, 16_384, 2**31, 2**62, 2**63 - 1, -1, -(2**63)]
    for kind in ("gauge", "sum"):
        for start in (0, 1_700_000_000_000_000_000):
            dps = [
                NumberDataPoint(
                    time_unix_nano=1_700_000_000_000_000_001 + i,
                    start_time_unix_nano=start,
                    as_double=i / 3 if i else 0.0,
                    attributes=[KeyValue(key="markov.step", value=AnyValue(int_value=step))],
                )
                for i, step in enumerate(steps)
            ]
            data = getattr(metric(kind, dps), kind)
            assert wire_points(data, len(dps)) == (
                steps,
                [i / 3 if i else 0.0 for i in range(len(steps))],
                [1_700_000_000_000_000_001 + i for i in range(len(steps))],
            ), (kind, start)


def test_a_metric_with_one_uncommon_point_is_left_to_the_walk() -> None:
    """Common points and one other: an as_int, no value, a zero time (proto3 omits it), a
    second attribute, flags, an exemplar, a step given as text. Each is declined."""

    def common(i: int) -> NumberDataPoint:
        step = KeyValue(key="markov.step", value=AnyValue(int_value=i))
        return NumberDataPoint(time_unix_nano=10**18 + i, as_double=0.5, attributes=[step])

    odd = [common(3) for _ in range(7)]
    odd[0].ClearField("as_double")
    odd[0].as_int = 5
    odd[1].ClearField("as_double")
    odd[2].time_unix_nano = 0
    odd[3].attributes.append(KeyValue(key="rank", value=AnyValue(int_value=1)))
    odd[4].flags = 1
    odd[5].exemplars.add(as_double=1.0)
    odd[6].attributes[0].value.string_value = "3"
    for point in odd:
        data = metric("gauge", [common(1), point, common(2)]).gauge
        assert wire_points(data, 3) is None, point


def test_a_metric_whose_layout_changes_at_every_point_is_left_to_the_walk() -> None:
    """Start times on every other point: a run of one layout a point, each costing more than
    the walk's point. Past MAX_RUNS (plus one per 16 points) the fast path declines."""

    def point(i: int) -> NumberDataPoint:
        step = KeyValue(key="markov.step", value=AnyValue(int_value=i))
        dp = NumberDataPoint(time_unix_nano=10**18 + i, as_double=0.5, attributes=[step])
        dp.start_time_unix_nano = 10**18 if i % 2 else 0
        return dp

    n = 2 * (MAX_RUNS + 8)
    data = metric("gauge", [point(i) for i in range(n)]).gauge
    assert wire_points(data, n) is None
    steady = metric("gauge", [point(2 * i) for i in range(n)]).gauge  # one layout throughout
    assert wire_points(steady, n) is not None
