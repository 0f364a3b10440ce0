"""What reaches the run dir: OTLP-JSON lines the official proto classes parse, point by point."""

from __future__ import annotations

import gc
import json
import math
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from otlp_files import lines, log_records, metrics, points, recording, spans, traces

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.rules import text_problem


def offline(**kwargs: object) -> ExperimentRecorder:
    return ExperimentRecorder(name="wire", recording_mode=RecordingMode.OFFLINE, **kwargs)


def no_bare_constants(text: str) -> None:
    """json.loads refuses the bare NaN/Infinity tokens that OTLP-JSON forbids."""

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in OTLP-JSON")

    json.loads(text, parse_constant=refuse)


# -- the lines themselves ----------------------------------------------------------------------


def test_every_line_parses_with_the_official_proto_classes(isolated: Path) -> None:
    """metrics/traces/logs lines parse into MetricsData/TracesData/LogsData, one batch per line."""
    recorder = offline(batch_size=3)
    with recorder:
        for i in range(10):
            recorder.add_record({"loss": 1.0 / (i + 1), "acc": i / 10})
    run = isolated / recorder.recording_id
    for signal in ("metrics", "traces", "logs"):
        assert lines(run, signal), signal
        for line in lines(run, signal):
            no_bare_constants(line)
    assert len(metrics(run)) >= 4  # 10 records cut in batches of 3, plus the final batch
    for batch in metrics(run):
        (rm,) = batch.resource_metrics
        (sm,) = rm.scope_metrics
        assert sm.scope.name == "markov_otel"
        assert len(sm.metrics) <= 2
    assert len(traces(run)) >= 1
    assert {r.event_name for r in log_records(run)} == {"markov.lifecycle"}


def test_files_are_one_signal_each_and_json_lines(isolated: Path) -> None:
    """Each signal file holds only its own signal; every line ends with a newline."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
    run = isolated / recorder.recording_id
    for signal, top in (
        ("metrics", "resourceMetrics"),
        ("traces", "resourceSpans"),
        ("logs", "resourceLogs"),
    ):
        raw = (run / f"{signal}.jsonl").read_bytes()
        assert raw.endswith(b"\n")
        for line in raw.decode().splitlines():
            assert list(json.loads(line)) == [top]


def test_trace_and_span_ids_are_hex(isolated: Path) -> None:
    """traceId/spanId are 32/16 lowercase hex chars (not base64), enums are integers."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
    run = isolated / recorder.recording_id
    (line,) = lines(run, "traces")
    (span,) = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
    assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
    assert span["kind"] == 1 and isinstance(span["status"]["code"], int)
    assert span["name"] == "experiment wire"
    assert int(span["startTimeUnixNano"]) < int(span["endTimeUnixNano"])
    events = [e["attributes"][0]["value"]["stringValue"] for e in span["events"]]
    assert events == ["started", "finished"]
    (parsed,) = spans(run)
    assert parsed.trace_id  # the proto parse accepted the line


def test_lifecycle_log_events(isolated: Path) -> None:
    """Log events markov.lifecycle say started then finished, with the run's Resource."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
    records = log_records(isolated / recorder.recording_id)
    steps = [
        r.attributes[0].value.string_value for r in records if r.event_name == "markov.lifecycle"
    ]
    assert steps == ["started", "finished"]
    raw = json.loads(lines(isolated / recorder.recording_id, "logs")[0])
    resource = {a["key"] for a in raw["resourceLogs"][0]["resource"]["attributes"]}
    assert "markov.recording.id" in resource


# -- points ------------------------------------------------------------------------------------


def test_n_records_give_n_times_keys_points_with_their_own_times(isolated: Path) -> None:
    """N records of K keys are N*K points, each with its add_record time and auto step."""
    keys = ("loss", "acc", "lr")
    n = 250
    recorder = offline(batch_size=64)
    brackets = []
    with recorder:
        for i in range(n):
            before = time.time_ns()
            recorder.add_record({k: i + j / 10 for j, k in enumerate(keys)})
            brackets.append((before, time.time_ns()))
    got = points(isolated / recorder.recording_id)
    assert len(got) == n * len(keys)
    by_step: dict[int, list] = {}
    for p in got:
        by_step.setdefault(p.step, []).append(p)
    assert sorted(by_step) == list(range(n))
    for step, pts in by_step.items():
        assert sorted(p.key for p in pts) == sorted(keys)
        assert len({p.time_unix_nano for p in pts}) == 1  # one record, one time
        before, after = brackets[step]
        assert before <= pts[0].time_unix_nano <= after
        assert {p.key: p.value for p in pts} == {k: step + j / 10 for j, k in enumerate(keys)}
    times = [by_step[s][0].time_unix_nano for s in range(n)]
    assert len(set(times)) == n
    assert times == sorted(times)
    assert recording(isolated / recorder.recording_id)["points"] == n * len(keys)


def test_explicit_steps_are_kept_even_backwards(isolated: Path) -> None:
    """step= is used as given (repeats and going back kept); auto steps continue from the last."""
    recorder = offline()
    with recorder:
        recorder.add_record({"loss": 1.0})  # 0
        recorder.add_record({"loss": 2.0}, step=10)
        recorder.add_record({"loss": 3.0})  # 11
        recorder.add_record({"loss": 4.0}, step=5)
        recorder.add_record({"loss": 5.0}, step=5)
        recorder.add_record({"loss": 6.0})  # 6
        recorder.add_record({"loss": 7.0}, step=np.int64(100))
    got = [(p.step, p.value) for p in points(isolated / recorder.recording_id)]
    assert got == [(0, 1.0), (10, 2.0), (11, 3.0), (5, 4.0), (5, 5.0), (6, 6.0), (100, 7.0)]


@pytest.mark.parametrize("step", [1.5, "3", True, None.__class__])
def test_bad_step_is_refused(isolated: Path, step: object) -> None:
    """A step that is not an integer is a ConfigError naming it; nothing is recorded."""
    recorder = offline()
    with recorder:
        with pytest.raises(ConfigError, match="step="):
            recorder.add_record({"loss": 1.0}, step=step)  # type: ignore[arg-type]
        recorder.add_record({"loss": 2.0})
    assert [(p.step, p.value) for p in points(isolated / recorder.recording_id)] == [(0, 2.0)]


def test_non_finite_round_trip(isolated: Path) -> None:
    """NaN and ±inf are the strings "NaN"/"Infinity"/"-Infinity" on the wire, floats after parse."""
    recorder = offline()
    with recorder:
        recorder.add_record({"nan": float("nan"), "inf": math.inf, "ninf": -math.inf})
        recorder.add_record({"nan": np.float32("nan"), "inf": np.float64("inf"), "ninf": "-inf"})
    run = isolated / recorder.recording_id
    raw = "\n".join(lines(run, "metrics"))
    for token in ('"asDouble":"NaN"', '"asDouble":"Infinity"', '"asDouble":"-Infinity"'):
        assert raw.count(token) == 2, token
    no_bare_constants(raw.split("\n")[0])
    values: dict[str, list[float]] = {}
    for p in points(run):
        assert p.kind == "as_double"
        values.setdefault(p.key, []).append(p.value)
    assert all(math.isnan(v) for v in values["nan"])
    assert values["inf"] == [math.inf, math.inf]
    assert values["ninf"] == [-math.inf, -math.inf]
    assert recording(run)["last_values"] == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity"}


def test_ints_bools_and_huge_ints(isolated: Path) -> None:
    """ints are asInt (decimal strings), bools 0/1, ints outside int64 become doubles."""
    record = {
        "i": 7,
        "neg": -3,
        "max": 2**63 - 1,
        "min": -(2**63),
        "over": 2**63,
        "huge": 10**30,
        "t": True,
        "f": False,
        "x": 0.5,
    }
    recorder = offline()
    with recorder:
        recorder.add_record(record)
    run = isolated / recorder.recording_id
    raw = lines(run, "metrics")[0]
    assert '"asInt":"9223372036854775807"' in raw
    assert '"asInt":"1"' in raw and '"asInt":"0"' in raw
    got = {p.key: (p.kind, p.value) for p in points(run)}
    assert got == {
        "i": ("as_int", 7),
        "neg": ("as_int", -3),
        "max": ("as_int", 2**63 - 1),
        "min": ("as_int", -(2**63)),
        "over": ("as_double", float(2**63)),
        "huge": ("as_double", 1e30),
        "t": ("as_int", 1),
        "f": ("as_int", 0),
        "x": ("as_double", 0.5),
    }


def test_key_sanitising_keeps_the_original_key(isolated: Path) -> None:
    """Keys outside the instrument-name syntax are sanitised; markov.key keeps the original."""
    long_key = "a" * 300
    record = {
        "loss": 1.0,
        "val/loss": 2.0,
        "top-1.acc": 3.0,
        "a b": 4.0,
        "a_b": 5.0,
        "1st": 6.0,
        "ünï": 7.0,
        "x:y": 8.0,
        long_key: 9.0,
    }
    recorder = offline()
    with recorder:
        recorder.add_record(record)
    got = points(isolated / recorder.recording_id)
    assert {p.key: p.value for p in got} == record
    names = {p.key: p.name for p in got}
    assert names["loss"] == "loss"
    assert names["val/loss"] == "val/loss"
    assert names["top-1.acc"] == "top-1.acc"
    assert names["a b"] == "a_b"
    assert names["1st"] == "k_1st"
    assert names["x:y"] == "x_y"
    assert len(names[long_key]) == 255
    for key, name in names.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}", name), key
    raw = json.loads(lines(isolated / recorder.recording_id, "metrics")[0])
    originals = []
    for metric in raw["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
        attrs = {a["key"]: a["value"] for a in metric["gauge"]["dataPoints"][0]["attributes"]}
        if "markov.key" in attrs:
            originals.append(attrs["markov.key"]["stringValue"])
            assert originals[-1] != metric["name"]
        else:
            assert metric["name"] in record
    assert sorted(originals) == sorted(["a b", "1st", "ünï", "x:y", long_key])


def test_nested_dicts_are_flattened_with_slash(isolated: Path) -> None:
    """{"val": {"loss": 1, "acc": {"top1": 2}}} records "val/loss" and "val/acc/top1"."""
    recorder = offline()
    with recorder:
        recorder.add_record({"val": {"loss": 1.0, "acc": {"top1": 0.5}}, "loss": 2.0})
    got = {p.key: p.value for p in points(isolated / recorder.recording_id)}
    assert got == {"val/loss": 1.0, "val/acc/top1": 0.5, "loss": 2.0}


# -- the value table (values.py) ---------------------------------------------------------------


def test_numpy_scalars_and_numeric_strings_are_converted(isolated: Path) -> None:
    """numpy scalars, one-element arrays and numeric strings become plain numbers."""
    recorder = offline()
    with recorder:
        recorder.add_record(
            {
                "f64": np.float64(0.25),
                "f32": np.float32(0.5),
                "i64": np.int64(3),
                "i8": np.int8(-2),
                "b": np.bool_(True),
                "arr": np.array([1.5]),
                "s": "0.75",
                "e": " 1e3 ",
            }
        )
    got = {p.key: p.value for p in points(isolated / recorder.recording_id)}
    assert got == {
        "f64": 0.25,
        "f32": 0.5,
        "i64": 3,
        "i8": -2,
        "b": 1,
        "arr": 1.5,
        "s": 0.75,
        "e": 1000.0,
    }


@pytest.mark.parametrize(
    "bad",
    [None, b"0.5", [], (1.0, "a"), np.array([]), object(), {1, 2}],
    ids=["None", "bytes", "empty-list", "tuple-with-text", "empty-array", "object", "set"],
)
def test_unsupported_values_name_the_key_and_record_nothing(isolated: Path, bad: object) -> None:
    """An unsupported value is a ConfigError naming its key; no part of that record is kept."""
    recorder = offline()
    with recorder:
        recorder.add_record({"loss": 1.0})
        with pytest.raises(ConfigError, match="'acc'"):
            recorder.add_record({"loss": 2.0, "acc": bad, "lr": 0.1})
        with pytest.raises(ConfigError, match="'val/acc'"):
            recorder.add_record({"loss": 3.0, "val": {"acc": bad}})
        recorder.add_record({"loss": 4.0, "acc": 0.5})  # still working
    got = [(p.step, p.key, p.value) for p in points(isolated / recorder.recording_id)]
    assert got == [(0, "loss", 1.0), (1, "loss", 4.0), (1, "acc", 0.5)]


@pytest.mark.parametrize(
    "bad",
    [{}, {"": 1.0}, {3: 1.0}, [("loss", 1.0)], "loss", None],
    ids=["empty", "empty-key", "int-key", "list", "str", "None"],
)
def test_bad_records_are_refused(isolated: Path, bad: object) -> None:
    """Empty records, non-string keys and non-dicts are ConfigErrors; the recorder goes on."""
    recorder = offline()
    with recorder:
        recorder.add_record({"loss": 1.0})  # the fast path knows "loss" now
        with pytest.raises(ConfigError):
            recorder.add_record(bad)  # type: ignore[arg-type]
        recorder.add_record({"loss": 2.0})
    got = [(p.step, p.value) for p in points(isolated / recorder.recording_id)]
    assert got == [(0, 1.0), (1, 2.0)]


def test_caller_mutating_its_dict_changes_nothing_recorded(isolated: Path) -> None:
    """A training loop reusing one dict (flat and nested) records each value as it was."""
    recorder = offline(batch_size=1000, batch_processing_interval=60)
    flat = {"loss": 0.0}
    nested = {"val": {"loss": 0.0}}
    with recorder:
        for i in range(5):
            flat["loss"] = float(i)
            nested["val"]["loss"] = float(i * 10)
            recorder.add_record(flat)
            recorder.add_record(nested)
        flat["loss"] = 99.0
        flat["extra"] = 1.0
        nested["val"]["loss"] = 99.0
    got = [(p.key, p.value) for p in points(isolated / recorder.recording_id)]
    assert [v for k, v in got if k == "loss"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [v for k, v in got if k == "val/loss"] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert "extra" not in {k for k, _ in got}


# -- batching, backpressure, threads -----------------------------------------------------------


def test_interval_flush_writes_while_running(isolated: Path) -> None:
    """With a short batch_processing_interval, records reach disk before stop()."""
    recorder = offline(batch_processing_interval=0.05)
    with recorder:
        for i in range(3):
            recorder.add_record({"loss": float(i)})
        run = isolated / recorder.recording_id
        deadline = time.monotonic() + 30
        while len(points(run)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [p.value for p in points(run)] == [0.0, 1.0, 2.0]
        assert recording(run)["status"] == "running"


def test_batch_size_cuts_batches(isolated: Path) -> None:
    """No batch holds more records than batch_size."""
    recorder = offline(batch_size=10, batch_processing_interval=60)
    with recorder:
        for i in range(95):
            recorder.add_record({"loss": float(i)}, step=i)
    run = isolated / recorder.recording_id
    sizes = [
        sum(len(m.gauge.data_points) for m in b.resource_metrics[0].scope_metrics[0].metrics)
        for b in metrics(run)
    ]
    assert sum(sizes) == 95
    assert max(sizes) == 10
    assert sizes[-1] == 0  # the final batch


def test_backpressure_never_drops(isolated: Path) -> None:
    """300k points through a tiny batch size all reach disk, each once, in order."""
    n = 300_000
    recorder = offline(batch_size=50)
    with recorder:
        for i in range(n):
            recorder.add_record({"v": i})
    run = isolated / recorder.recording_id
    values = []
    for line in lines(run, "metrics"):
        for metric in json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
            values.extend(int(dp["asInt"]) for dp in metric["gauge"]["dataPoints"])
    assert len(values) == n
    assert values == list(range(n))
    assert recording(run)["points"] == n


@pytest.mark.slow
def test_buffered_records_give_the_garbage_collector_nothing_to_walk(isolated: Path) -> None:
    """Records waiting in the buffer are not GC-tracked objects: full collections walking
    200k buffered (time, step, dict) tuples cost a tight loop ~0.4 µs a record."""
    n = 50_000
    recorder = offline(batch_size=1_000_000, batch_processing_interval=3600)
    with recorder:
        gc.collect()
        before = len(gc.get_objects())
        for i in range(n):
            recorder.add_record({"loss": float(i), "acc": 0.5})
        gc.collect()
        grown = len(gc.get_objects()) - before
        assert grown < n // 100, f"{grown} tracked objects for {n} buffered records"
    assert len(points(isolated / recorder.recording_id)) == 2 * n  # buffered, then all written


@pytest.mark.slow
def test_concurrent_add_record_stores_every_record_once(isolated: Path) -> None:
    """8 threads x 10k records at once: every record stored exactly once, and no two records
    share a default step (they did: ~54k distinct steps of 80k)."""
    threads_n, per_thread = 8, 10_000
    recorder = offline(batch_size=100, batch_processing_interval=0.05)
    barrier = threading.Barrier(threads_n)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            recorder.add_record({"id": t * per_thread + i, f"t{t}": i})

    with recorder:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    got = points(isolated / recorder.recording_id)
    ids = Counter(p.value for p in got if p.key == "id")
    assert len(ids) == threads_n * per_thread
    assert set(ids.values()) == {1}
    steps = sorted(p.step for p in got if p.key == "id")  # no two records share a step
    assert steps == list(range(threads_n * per_thread))
    for t in range(threads_n):
        assert sorted(p.value for p in got if p.key == f"t{t}") == list(range(per_thread))


# -- any record round-trips ----------------------------------------------------------------------


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(min_size=1, max_size=8) | st.text(min_size=1020, max_size=1030))
def test_keys_are_stored_or_refused_by_the_shared_rules(isolated: Path, key: str) -> None:
    """add_record refuses exactly the keys rules.text_problem names (what the backend refuses)."""
    recorder = offline()
    recorder.start()
    try:
        problem = text_problem(key)
        if problem is None:
            recorder.add_record({key: 1.0})
        else:
            with pytest.raises(ConfigError, match="record key"):
                recorder.add_record({key: 1.0})
    finally:
        recorder.stop()
    got = points(isolated / recorder.recording_id)
    assert [p.key for p in got] == ([] if problem else [key])


_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
)
# Keys the backend can store (rules.py): no lone surrogate, no NUL. The others are refused at
# the call; test_keys_are_stored_or_refused_by_the_shared_rules covers them.
_keys = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40
)
_records = st.dictionaries(_keys, _values, min_size=1, max_size=6)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(records=st.lists(_records, min_size=1, max_size=4))
def test_any_records_round_trip(isolated: Path, records: list[dict[str, Any]]) -> None:
    """Any keys and numbers come back through the proto classes as recorded, step by step."""
    recorder = offline(batch_size=3)
    with recorder:
        for record in records:
            recorder.add_record(record)
    got: dict[tuple[int, str], Any] = {}
    for p in points(isolated / recorder.recording_id):
        assert (p.step, p.key) not in got
        got[(p.step, p.key)] = p.value
    want = {(step, k): v for step, record in enumerate(records) for k, v in record.items()}
    assert got.keys() == want.keys()
    for where, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[where]), where
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            assert got[where] == float(value), where
        else:
            assert got[where] == value, where


# -- nested records of a known shape take the fast path, with the slow path's outcome -------------


_leaf = st.one_of(
    st.floats(allow_nan=False),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from(["0.5", b"n/a", None]),  # b"n/a": no number, no text (a str is a text)
)
_inner = st.dictionaries(st.sampled_from(["loss", "acc", "", "x\x00"]), _leaf, max_size=2)
_nested_records = st.dictionaries(
    st.sampled_from(["train", "val", "val/loss", "lr", "", "bad\x00"]),
    st.one_of(_leaf, _inner),
    max_size=3,
)


def _outcome(recorder: ExperimentRecorder, record: Any) -> str:
    try:
        recorder.add_record(record)
    except ConfigError as exc:
        return f"refused: {exc}"
    return "kept"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_nested_records, min_size=1, max_size=6))
def test_a_nested_record_of_a_known_shape_is_kept_or_refused_as_the_first_time(
    isolated: Path, records: list[dict[str, Any]]
) -> None:
    """Each record is given twice: the second time (learnt names, the fast path) it is kept or
    refused exactly as the first time, and stores the same points."""
    recorder = offline()
    with recorder:
        outcomes = [(_outcome(recorder, r), _outcome(recorder, r)) for r in records]
    for first, second in outcomes:
        assert first == second
    got: dict[int, dict[str, Any]] = {}
    for p in points(isolated / recorder.recording_id):
        got.setdefault(p.step, {})[p.key] = p.value
    pairs = sorted(got.items())
    assert len(pairs) % 2 == 0 and len(pairs) == 2 * sum(f == "kept" for f, _ in outcomes)
    for (_, a), (_, b) in zip(pairs[0::2], pairs[1::2], strict=True):
        assert a == b


def _stored(recorder: ExperimentRecorder, run_dir: Path) -> dict[int, dict[str, Any]]:
    got: dict[int, dict[str, Any]] = {}
    for p in points(run_dir / recorder.recording_id):
        got.setdefault(p.step, {})[p.key] = p.value
    return got


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=_nested_records, inners=st.lists(st.one_of(_leaf, _inner), min_size=3, max_size=3))
@example(first={"train": {"loss": 1.0}}, inners=[{"loss": 2.0, "acc": 3.0}])  # one key more
@example(first={"train": {"loss": 1.0, "acc": 1.0}}, inners=[{"loss": 2.0, "x": 3.0}])  # other
@example(first={"train": {"loss": 1.0}}, inners=[0.5])  # no dict any more
@example(first={"train": {"loss": 1.0}, "lr": 0.1}, inners=[{"loss": 2.0}, {"a": 1.0}])
@example(first={"train": {"loss": 1.0}}, inners=[{"loss": b"n/a"}])  # not a number
def test_a_record_like_a_learnt_shape_but_different_inside_is_kept_or_refused_as_when_new(
    isolated: Path, first: dict[str, Any], inners: list[Any]
) -> None:
    """A record with a learnt shape's outer keys but other inner keys, sizes or types (the
    shape's flattening function looks it up by the outer keys alone) is kept or refused, and
    stores the same points, as by a recorder that never saw the shape."""
    second = dict(zip(first, inners, strict=False))
    learnt, fresh = offline(), offline()
    with learnt:
        _outcome(learnt, first)
        _outcome(learnt, first)  # learnt, if the slow path kept it
        after_learning = _outcome(learnt, second)
    with fresh:
        when_new = _outcome(fresh, second)
    assert after_learning == when_new
    if when_new == "kept":
        assert list(_stored(learnt, isolated).values())[-1] == _stored(fresh, isolated)[0]


def test_keys_that_look_like_code_are_recorded_as_text_by_the_learnt_shape(
    isolated: Path,
) -> None:
    """A learnt shape's function is generated source: keys with quotes, backslashes, braces
    and newlines are literals in it, recorded exactly, never run."""
    outer = "x'); open('pwned', 'w') #\\"
    inner = 'y"}\n{__import__("os")}'
    recorder = offline()
    with recorder:
        for i in range(3):  # the slow path, then twice through the learnt shape
            recorder.add_record({outer: {inner: float(i)}, "lr": 0.5})
    got = _stored(recorder, isolated)
    assert [got[s] for s in range(3)] == [
        {f"{outer}/{inner}": float(i), "lr": 0.5} for i in range(3)
    ]
    assert not (isolated.parent / "pwned").exists() and not Path("pwned").exists()


def test_nested_records_of_more_shapes_than_are_learnt_are_all_recorded(isolated: Path) -> None:
    """Past MAX_SHAPES learnt shapes, new ones take the slow path every time: all still kept."""
    from markov_otel.recording.recorder import MAX_SHAPES

    shapes = MAX_SHAPES + 50
    recorder = offline()
    with recorder:
        for i in range(shapes):
            for v in (1.0, 2.0):
                recorder.add_record({f"g{i}": {"loss": v}})
        learnt = len(recorder._shapes)
    got = _stored(recorder, isolated)
    assert len(got) == 2 * shapes
    assert sorted(got.values(), key=str) == sorted(
        ({f"g{i}/loss": v} for i in range(shapes) for v in (1.0, 2.0)), key=str
    )
    assert learnt == MAX_SHAPES


def test_a_key_given_twice_through_a_learnt_nesting_is_still_refused(isolated: Path) -> None:
    """Both spellings learnt, then together in one record: refused as on the slow path."""
    recorder = offline()
    with recorder:
        recorder.add_record({"val/loss": 1.0})
        recorder.add_record({"val": {"loss": 2.0}})
        for _ in range(2):
            with pytest.raises(ConfigError, match="given twice"):
                recorder.add_record({"val/loss": 1.0, "val": {"loss": 2.0}})
    assert [p.value for p in points(isolated / recorder.recording_id)] == [1.0, 2.0]


def test_a_new_or_bad_flat_key_beside_a_learnt_nesting_takes_the_slow_path(isolated: Path) -> None:
    """Beside a learnt nested dict, a key never seen is checked as on the slow path: a NUL key
    refused, a good one kept."""
    recorder = offline()
    with recorder:
        recorder.add_record({"train": {"loss": 1.0}})
        with pytest.raises(ConfigError, match="NUL"):
            recorder.add_record({"train": {"loss": 1.0}, "bad\x00": 0.5})
        recorder.add_record({"train": {"loss": 2.0}, "lr": 0.5})
    got = [(p.key, p.value) for p in points(isolated / recorder.recording_id)]
    assert sorted(got) == [("lr", 0.5), ("train/loss", 1.0), ("train/loss", 2.0)]
