"""Bad input to add_record, table-driven: each case has the outcome values.py documents.

Every case records a good record before and after the case, then reads the run dir back through
the official proto classes: an accepted case stores exactly the documented points, a refused one
raises a ConfigError naming the key and stores nothing of itself, and the recorder goes on.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
import requests
from backend_fixture import Backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_files import points, recording

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.recording import values
from markov_otel.shipping import runs
from markov_otel.shipping.spool import Spool

HAS_TORCH = importlib.util.find_spec("torch") is not None
MB = 1_000_000
INT64_MAX = 2**63 - 1


class Level(enum.IntEnum):
    HIGH = 3


class BadFloat:
    """An object whose __float__ raises: it claims to be a number and is not."""

    def __float__(self) -> float:
        raise ValueError("not today")


@dataclass(frozen=True)
class Case:
    """One row of the table: what add_record gets, and what must be stored or refused."""

    record: Any
    stored: dict[str, tuple[str, Any]] | None = None  # key -> (as_int|as_double, value)
    refused: str | None = None  # a regex the ConfigError message must match
    step: Any = None
    stored_step: int | None = None
    build: Callable[[], Any] | None = field(default=None, repr=False)  # for big/lazy records


def ok(**stored: tuple[str, Any]) -> dict[str, tuple[str, Any]]:
    return stored


D, I = "as_double", "as_int"  # noqa: E741 -- the two OTLP point kinds, short for the table

CASES: dict[str, Case] = {
    # -- numbers recorded as is --
    "float": Case({"x": 0.25}, ok(x=(D, 0.25))),
    "negative-zero": Case({"x": -0.0}, ok(x=(D, -0.0))),
    "subnormal": Case({"x": 5e-324}, ok(x=(D, 5e-324))),
    "nan": Case({"x": math.nan}, ok(x=(D, math.nan))),
    "inf": Case({"x": math.inf}, ok(x=(D, math.inf))),
    "-inf": Case({"x": -math.inf}, ok(x=(D, -math.inf))),
    "int": Case({"x": 7}, ok(x=(I, 7))),
    "int64-max": Case({"x": INT64_MAX}, ok(x=(I, INT64_MAX))),
    "true": Case({"x": True}, ok(x=(I, 1))),
    "false": Case({"x": False}, ok(x=(I, 0))),
    "int-2**63": Case({"x": 2**63}, ok(x=(D, float(2**63)))),
    "int-below-int64": Case({"x": -(2**63) - 1}, ok(x=(D, -float(2**63)))),
    "int-10**30": Case({"x": 10**30}, ok(x=(D, 1e30))),
    "intenum": Case({"x": Level.HIGH}, ok(x=(I, 3))),
    # -- converted --
    "np.float32": Case({"x": np.float32(0.1)}, ok(x=(D, float(np.float32(0.1))))),
    "np.float64-nan": Case({"x": np.float64("nan")}, ok(x=(D, math.nan))),
    "np.int64": Case({"x": np.int64(-5)}, ok(x=(I, -5))),
    "np.uint64-max": Case({"x": np.uint64(2**64 - 1)}, ok(x=(D, float(2**64 - 1)))),
    "np.bool_": Case({"x": np.bool_(True)}, ok(x=(I, 1))),
    "np-0d-array": Case({"x": np.array(2.5)}, ok(x=(D, 2.5))),
    "np-1-element-array": Case({"x": np.array([3])}, ok(x=(I, 3))),
    "np-1x1-array": Case({"x": np.array([[0.5]])}, ok(x=(D, 0.5))),
    "np-1-element-numeric-str-array": Case({"x": np.array(["0.5"])}, ok(x=(D, 0.5))),
    "decimal": Case({"x": Decimal("0.5")}, ok(x=(D, 0.5))),
    "fraction": Case({"x": Fraction(1, 4)}, ok(x=(D, 0.25))),
    "numeric-str": Case({"x": "0.5"}, ok(x=(D, 0.5))),
    "numeric-str-spaces-exp": Case({"x": " 1e3 "}, ok(x=(D, 1000.0))),
    "numeric-str-nan": Case({"x": "nan"}, ok(x=(D, math.nan))),
    "numeric-str-inf": Case({"x": "-Infinity"}, ok(x=(D, -math.inf))),
    "nested-dict": Case(
        {"val": {"loss": 1.0, "acc": {"top1": 2}}},
        ok(**{"val/loss": (D, 1.0), "val/acc/top1": (I, 2)}),
    ),
    "mapping-not-dict": Case(MappingProxyType({"x": 1.5}), ok(x=(D, 1.5))),
    "empty-nested-dict-beside-a-value": Case({"val": {}, "x": 1.0}, ok(x=(D, 1.0))),
    # -- keys recorded as is (the metric name is sanitised, markov.key keeps the key) --
    "unicode-key": Case({"λ/損失": 0.5}, ok(**{"λ/損失": (D, 0.5)})),
    "key-with-spaces-and-slashes": Case(
        {"train loss/epoch 1": 0.5, "/lead/and/trail/": 1},
        ok(**{"train loss/epoch 1": (D, 0.5), "/lead/and/trail/": (I, 1)}),
    ),
    "key-with-quotes-and-controls": Case({'a"b\\c\n\td': 1.0}, ok(**{'a"b\\c\n\td': (D, 1.0)})),
    "10k-distinct-keys": Case(
        None,
        {f"k{i}": (I, i) for i in range(10_000)},
        build=lambda: {f"k{i}": i for i in range(10_000)},
    ),
    "key-of-1024-utf8-bytes": Case(None, {"é" * 512: (D, 1.0)}, build=lambda: {"é" * 512: 1.0}),
    # -- steps --
    "step-backwards": Case({"x": 1.0}, ok(x=(D, 1.0)), step=-3, stored_step=-3),
    "step-np.int64": Case({"x": 1.0}, ok(x=(D, 1.0)), step=np.int64(7), stored_step=7),
    "step-int64-max-1": Case(
        {"x": 1.0}, ok(x=(D, 1.0)), step=INT64_MAX - 1, stored_step=INT64_MAX - 1
    ),
    "step-True": Case({"x": 1.0}, refused=r"step=True", step=True),
    "step-float": Case({"x": 1.0}, refused=r"step=1\.0", step=1.0),
    "step-2**63": Case({"x": 1.0}, refused=r"step=9223372036854775808", step=2**63),
    "step-below-int64": Case({"x": 1.0}, refused=r"step=-9223372036854775809", step=-(2**63) - 1),
    # -- refused, naming the key --
    "None": Case({"ok2": 1.0, "x": None}, refused=r"'x'.*None"),
    "str-with-NUL": Case({"ok2": 1.0, "x": "a\x00b"}, refused=r"'x'.*NUL"),
    "bytes": Case({"x": b"0.5"}, refused=r"'x'.*bytes"),
    "bytearray": Case({"x": bytearray(b"1")}, refused=r"'x'.*bytearray"),
    "list-of-str": Case({"x": ["a", "b"]}, refused=r"'x'.*list.*<U1"),
    "ragged-list": Case({"x": [[1.0, 2.0], [3.0]]}, refused=r"'x'.*list.*not rectangular"),
    "empty-list": Case({"x": []}, refused=r"'x'.*list.*empty"),
    "complex": Case({"x": 1 + 2j}, refused=r"'x'.*complex"),
    "np-object-array": Case({"x": np.array([1.0, None])}, refused=r"'x'.*ndarray.*object"),
    "np-empty-array": Case({"x": np.array([])}, refused=r"'x'.*ndarray"),
    "np-str-array": Case({"x": np.array(["a"])}, refused=r"'x'"),
    "float-that-raises": Case({"x": BadFloat()}, refused=r"'x'.*BadFloat"),
    "1MB-str": Case(
        None, refused=r"'x'.*1000000 bytes.*65536", build=lambda: {"ok2": 1.0, "x": "x" * MB}
    ),
    "bad-value-deep-in-nested-dict": Case(
        {"x": 1.0, "val": {"acc": {"top1": None}}}, refused=r"'val/acc/top1'"
    ),
    # -- refused records (keys, shape) --
    "empty-record": Case({}, refused=r"record is empty"),
    "only-empty-nested-dicts": Case({"val": {}}, refused=r"record is empty"),
    "non-string-key": Case({"x": 1.0, 3: 1.0}, refused=r"record key 3 "),
    "None-key": Case({None: 1.0}, refused=r"record key None "),
    "tuple-key": Case({("a", "b"): 1.0}, refused=r"record key \('a', 'b'\)"),
    "empty-key": Case({"": 1.0}, refused=r"record key ''"),
    "empty-key-nested": Case({"val": {"": 1.0}}, refused=r"record key ''"),
    "flattened-key-collision": Case({"val/loss": 1.0, "val": {"loss": 2.0}}, refused="'val/loss'"),
    # -- keys no backend can store (rules.py): refused here, never a line the backend refuses --
    "1MB-key": Case(None, refused=r"record key 'kkk.*1000000 bytes", build=lambda: {"k" * MB: 1.0}),
    "key-of-1025-utf8-bytes": Case({"é" * 512 + "x": 1.0}, refused=r"1025 bytes.*limit is 1024"),
    "lone-surrogate-key": Case({"bad\udc80": 1.0}, refused=r"'bad\\udc80'.*lone surrogate"),
    "NUL-key": Case({"a\x00b": 1.0}, refused=r"'a\\x00b'.*NUL"),
    "NUL-key-nested": Case({"val": {"a\x00": 1.0}}, refused=r"'val/a\\x00'.*NUL"),
    "not-a-dict": Case([("x", 1.0)], refused=r"must be a dict"),
}

if HAS_TORCH:  # pragma: no cover - torch is not installed in every environment
    import torch

    CASES["torch-scalar"] = Case({"x": torch.tensor(0.5)}, ok(x=(D, 0.5)))
    CASES["torch-1-element"] = Case({"x": torch.tensor([2])}, ok(x=(I, 2)))
    CASES["torch-complex"] = Case({"x": torch.tensor([1j, 2j])}, refused=r"'x'.*Tensor.*complex")


def offline() -> ExperimentRecorder:
    return ExperimentRecorder(
        "bad-input", recording_mode=RecordingMode.OFFLINE, batch_processing_interval=60
    )


def same(got: Any, want: Any) -> bool:
    """Equal as floats are stored: NaN equals NaN, and -0.0 is not 0.0."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, float) and want == 0.0:
        return got == 0.0 and math.copysign(1.0, got) == math.copysign(1.0, want)
    return type(got) is type(want) and got == want


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_has_its_documented_outcome(isolated: Path, case: Case) -> None:
    """Each value is stored as the values.py table says, or refused naming the key; then more."""
    record = case.build() if case.build else case.record
    recorder = offline()
    with recorder:
        recorder.add_record({"ok": 0.0, "x": 0.0})  # 'x' is now a fast-path key
        kwargs = {} if case.step is None else {"step": case.step}
        if case.refused is not None:
            with pytest.raises(ConfigError, match=case.refused) as caught:
                recorder.add_record(record, **kwargs)
            assert len(str(caught.value)) < 600  # a 1 MB value is not pasted into the message
        else:
            recorder.add_record(record, **kwargs)
        recorder.add_record({"ok": 1.0})
    got = points(isolated / recorder.recording_id)
    before = [p for p in got if p.step == 0 and p.kind == D and p.value == 0.0]
    assert sorted(p.key for p in before) == ["ok", "x"]
    (after,) = [p for p in got if p.key == "ok" and p.value == 1.0]
    middle = [p for p in got if p not in before and p is not after]
    if case.refused is not None:
        assert middle == []  # nothing of the refused record, not even its good keys
        assert after.step == 1  # the refused record did not use up a step
    else:
        step = 1 if case.stored_step is None else case.stored_step
        assert case.stored is not None
        assert sorted(p.key for p in middle) == sorted(case.stored)
        for p in middle:
            kind, value = case.stored[p.key]
            assert p.step == step and p.kind == kind, p.key[:40]
            assert same(p.value, value), (p.key[:40], p.value, value)
        assert after.step == step + 1
        assert len({p.time_unix_nano for p in middle}) == 1  # one record, one timestamp
    assert recording(isolated / recorder.recording_id)["points"] == len(got)


def test_the_values_table_documents_every_outcome_tested_here() -> None:
    """values.py's docstring names each kind of input this table feeds add_record."""
    doc = values.__doc__ or ""
    for phrase in (
        "NaN",
        "ints beyond int64",
        "numpy",
        "one-element arrays",
        "numeric strings",
        "nested dicts",
        "an empty nested dict",
        "the same flattened key",
        "bytes",
        "arrays of more than one element",
        "non-string or empty keys",
        "unicode",
        "markov.key",
        "step",
        "int64",
        "shortened",
    ):
        assert phrase in doc, phrase


# -- property: whatever is accepted comes back unchanged, from the spool and from the backend --

KEY_ALPHABET = "abcxyzXYZ019 /._-λ損éß\"'"
keys = st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=24)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**80),
    st.booleans(),
)
record_lists = st.lists(
    st.tuples(
        st.dictionaries(keys, numbers, min_size=1, max_size=4),
        # up to 5 default steps may follow an explicit one: they must stay within int64
        # (past it add_record refuses; test_edges_recording covers that)
        st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 6)),
    ),
    min_size=1,
    max_size=5,
)


def on_the_wire(value: float | int | bool) -> Any:
    """What the read API answers for a recorded value (protocol.md)."""
    if type(value) is bool:
        return int(value)
    if type(value) is int and not -(2**63) <= value < 2**63:
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def as_rows(rows: list[tuple[int, Any, int]]) -> list[tuple[int, str, Any, int]]:
    """Comparable rows: the value's type and its repr (so -0.0 is not 0.0, 1 is not 1.0)."""
    return sorted((s, type(v).__name__, repr(v), t) for s, v, t in rows)


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=record_lists)
def test_accepted_records_round_trip_through_spool_and_backend(
    backend: Backend, batch: list[tuple[dict[str, Any], int | None]]
) -> None:
    """Any record add_record accepts reads back unchanged from the run dir and from the backend."""
    recorder = ExperimentRecorder(
        "property",
        recording_mode=RecordingMode.ONLINE,
        endpoint=backend.url,
        api_key=backend.token,
        batch_processing_interval=0.05,
        sync_data_timeout=20.0,
    )
    want: dict[str, list[tuple[int, Any, tuple[int, int]]]] = {}
    with recorder:
        step = -1
        for record, explicit in batch:
            before = time.time_ns()
            recorder.add_record(record, step=explicit)
            after = time.time_ns()
            step = step + 1 if explicit is None else explicit
            for key, value in record.items():
                want.setdefault(key, []).append((step, on_the_wire(value), (before, after)))
    spooled: dict[str, list[tuple[int, Any, int]]] = {}
    for p in runs.points(Spool.for_run(recorder.run_dir.parent, recorder.recording_id)):
        value = on_the_wire(p.value) if not isinstance(p.value, str) else p.value
        spooled.setdefault(p.key, []).append((p.step, value, p.time_unix_nano))
    assert sorted(spooled) == sorted(want)
    for key, expected in want.items():
        got = spooled[key]
        assert len(got) == len(expected), key
        for (step, value, (lo, hi)), (s, v, t) in zip(expected, got, strict=True):
            assert (s, type(v), repr(v)) == (step, type(value), repr(value)), key
            assert lo <= t <= hi, key
        answer = requests.get(
            f"{backend.url}/api/v1/recordings/{recorder.recording_id}/records",
            params={"key": key},
            headers=backend.headers,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        served = [(r["step"], r["value"], r["time_unix_nano"]) for r in answer.json()]
        assert as_rows(served) == as_rows(got), key
