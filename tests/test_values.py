"""Faithful values (issue 22, goal 5): what a hyperparameter, a summary value or a record value
becomes, the same in recording.json, on the backend and through the read API; and values that
cannot be kept are refused at the call, naming the key, with nothing of them kept.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import requests
from backend_fixture import Backend, online_recorder
from otlp_files import last_resource, points, recording, value_of

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode, read


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("values", recording_mode=RecordingMode.OFFLINE, **kwargs)


class Boom:
    """Claims to be a number (`__float__`, `__index__`, `.item()`) and raises when asked."""

    def __float__(self) -> float:
        return 1 / 0

    def __index__(self) -> int:
        return 1 // 0

    def item(self) -> float:
        return 1 / 0


class FloatBoom:
    def __float__(self) -> float:
        raise ZeroDivisionError("no float")


class Color(enum.Enum):
    RED = "red"


# -- conversions that raise ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [Boom(), FloatBoom()], ids=["index-item-float", "float"])
def test_a_record_value_whose_conversion_raises_is_refused_naming_the_key(
    isolated: Path, value: Any
) -> None:
    """add_record: a raising __float__/__index__/.item() is a ConfigError naming the key; no
    point of that record is kept, not even its good keys."""
    with offline() as recorder:
        with pytest.raises(ConfigError, match=r"'bad'"):
            recorder.add_record({"good": 1.0, "bad": value})
        recorder.add_record({"good": 2.0})
    got = [(p.key, p.value) for p in points(isolated / recorder.recording_id)]
    assert got == [("good", 2.0)]


@pytest.mark.parametrize("value", [Boom(), FloatBoom()], ids=["index-item-float", "float"])
def test_a_summary_value_whose_conversion_raises_is_refused_naming_the_key(value: Any) -> None:
    """summary.add_* and summary.add: ConfigError naming the key, the summary unchanged."""
    recorder = offline()
    with pytest.raises(ConfigError, match="training_loss"):
        recorder.summary.add_training_loss(value)
    with pytest.raises(ConfigError, match="'f1'"):
        recorder.summary.add("f1", value)
    assert recorder.summary.to_dict() == {}


@pytest.mark.parametrize("value", [Boom(), FloatBoom()], ids=["index-item-float", "float"])
def test_a_hyperparameter_whose_conversion_raises_is_refused_naming_the_key(
    isolated: Path, value: Any
) -> None:
    """add_hyper_parameters and the constructor: ConfigError naming the key, nothing of that
    call kept (it was stored as '<Boom object at 0x…>')."""
    with pytest.raises(ConfigError, match=r"hyper_parameters\['bad'\]"):
        offline(hyper_parameters={"bad": value})
    with offline(hyper_parameters={"lr": 0.1}) as recorder:
        with pytest.raises(ConfigError, match=r"hyper_parameters\['bad'\]"):
            recorder.add_hyper_parameters({"wd": 0.5, "bad": value})
        recorder.add_record({"loss": 1.0})
    assert recording(isolated / recorder.recording_id)["hyper_parameters"] == {"lr": 0.1}


# -- what each kind of parameter becomes ----------------------------------------------------------

CONVERTED: dict[str, tuple[Any, Any]] = {
    "array": (np.array([[1, 2], [3, 4]], dtype=np.int32), [[1, 2], [3, 4]]),
    "float-array": (np.array([0.5, 1.5], dtype=np.float32), [0.5, 1.5]),
    "set": ({3, 1, 2}, [1, 2, 3]),
    "frozenset": (frozenset({"b", "a"}), ["a", "b"]),
    "datetime": (
        dt.datetime(2025, 5, 1, 5, 9, tzinfo=dt.timezone.utc),
        "2025-05-01T05:09:00+00:00",
    ),
    "date": (dt.date(2025, 5, 1), "2025-05-01"),
    "decimal": (Decimal("0.125"), 0.125),
    "fraction": (Fraction(1, 4), 0.25),
    "enum": (Color.RED, "red"),
    "path": (PurePosixPath("/data/train"), "/data/train"),
}


def test_each_kind_of_hyperparameter_becomes_its_documented_value(isolated: Path) -> None:
    """numpy arrays → lists, sets → sorted lists, datetime/date → ISO 8601, Decimal/Fraction →
    numbers, Enum → its value, Path → text: in recording.json and on every batch."""
    with offline(hyper_parameters={k: v for k, (v, _) in CONVERTED.items()}) as recorder:
        recorder.add_record({"loss": 1.0})
    run = isolated / recorder.recording_id
    assert recording(run)["hyper_parameters"] == {k: want for k, (_, want) in CONVERTED.items()}
    attrs = last_resource(run)
    omitted = [value_of(v) for v in attrs["markov.resource.omitted"].values]
    assert "markov.hparam.array" in omitted  # no OTel attribute value: sent whole, not on batches
    for key, (_, want) in CONVERTED.items():
        if key != "array":
            got = attrs[f"markov.hparam.{key}"]
            got = [value_of(v) for v in got.values] if isinstance(want, list) else got
            assert got == want, key


def test_bytes_as_a_hyperparameter_is_refused_naming_the_key() -> None:
    """bytes are no text: a ConfigError naming the key (it was stored as "b'…'")."""
    with pytest.raises(ConfigError, match=r"hyper_parameters\['blob'\].*bytes"):
        offline(hyper_parameters={"blob": b"\x00\x01"})


def test_an_int_past_int64_is_stored_as_a_double_said_once_without_a_traceback(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """hyper_parameters={'big': 2**70}: the double 2**70 everywhere, one warning naming the key,
    no traceback (the OTel encoder printed one on every batch)."""
    caplog.set_level(logging.WARNING)
    with offline(hyper_parameters={"big": 2**70}, batch_size=10) as recorder:
        for i in range(50):  # five batches
            recorder.add_record({"loss": float(i)})
    run = isolated / recorder.recording_id
    assert recording(run)["hyper_parameters"] == {"big": float(2**70)}
    assert last_resource(run)["markov.hparam.big"] == float(2**70)
    assert not [r for r in caplog.records if r.exc_info]
    said = [r for r in caplog.records if "'big'" in r.getMessage()]
    assert len(said) == 1 and "int64" in said[0].getMessage()


# -- the same value everywhere -------------------------------------------------------------------

ODD = {
    "with_none": [1, None],
    "dicts": [{"a": 1}, {"b": [2, 3]}],
    "empty": {},
    "mixed": [1, "a", 2.5],
    "inf": math.inf,
    "nan": math.nan,
}


def same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(want) and got == want


def test_nan_infinite_and_nested_parameters_reach_the_backend_and_read_back_the_same(
    backend: Backend, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_grad_norm=inf registers (it retried forever with InvalidJSONError); [1, None], lists
    of dicts, {} and mixed lists are the same value in recording.json, on the backend and in
    read.runs() offline and online (the backend had JSON text)."""
    recorder = online_recorder(
        backend.url, backend.token, hyper_parameters={"max_grad_norm": math.inf, **ODD}
    )
    with recorder:
        recorder.summary.add("best", -math.inf)
        recorder.add_record({"loss": 1.0})
    rid = recorder.recording_id
    assert backend.records(rid, "loss")  # registered: the points arrived
    stored = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    on_disk = json.loads((isolated / rid / "recording.json").read_text())
    wire = {"max_grad_norm": "Infinity", **ODD, "inf": "Infinity", "nan": "NaN"}
    for key, want in wire.items():
        assert on_disk["hyper_parameters"][key] == want, key
        assert stored["hyper_parameters"][key] == want, key
    assert stored["summary"]["best"] == on_disk["summary"]["best"] == "-Infinity"
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    offline_row = read.runs(isolated).iloc[0].to_dict()
    online_row = read.runs(backend.url).set_index("id").loc[rid].to_dict()
    for key, want in {"max_grad_norm": math.inf, **ODD}.items():
        for row in (offline_row, online_row):
            assert same(row[f"hparam.{key}"], want), (key, row[f"hparam.{key}"])
