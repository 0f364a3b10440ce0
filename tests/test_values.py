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
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import requests
from backend_fixture import Backend, online_recorder
from otlp_files import (
    attributes,
    histogram_points,
    last_resource,
    lines,
    log_records,
    points,
    recording,
    value_of,
)

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


# -- distributions (goal 1) ----------------------------------------------------------------------


def bucket_of(value: float, scale: int) -> int:
    """The OTel bucket index of |value| at `scale`, from the definition: the i with
    base**i < |value| <= base**(i+1), base = 2**2**-scale (a guess from log2, then checked)."""
    magnitude, per_octave = abs(value), 2**scale
    index = math.floor(math.log2(magnitude) * per_octave)
    while 2 ** (index / per_octave) >= magnitude:
        index -= 1
    while 2 ** ((index + 1) / per_octave) < magnitude:
        index += 1
    return index


def expanded(dp: Any) -> dict[int, int]:
    """Signed bucket index -> count (negative side as -(index) - 1 - 10**9, kept apart)."""
    out: dict[int, int] = {}
    for i, n in enumerate(dp.positive.bucket_counts):
        if n:
            out[dp.positive.offset + i] = n
    for i, n in enumerate(dp.negative.bucket_counts):
        if n:
            out[-(10**9) - (dp.negative.offset + i)] = n
    return out


def test_an_array_becomes_one_exponential_histogram_point_per_key_and_step(
    isolated: Path,
) -> None:
    """numpy float32 (1000 elements), a torch tensor and a list: one point each with count,
    sum, min, max, zero count, every element in its OTel bucket, ≤160 buckets a side, at the
    record's step and time beside its numbers."""
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal(1000) * 3).astype(np.float32)
    weights[:5] = 0.0
    arrays = {"w": weights, "listed": [0.5, 1.0, 2.0, -4.0, 1e-300, 3e300]}
    try:
        import torch

        arrays["tensor"] = torch.linspace(-1.0, 1.0, 101)
    except ImportError:  # pragma: no cover - torch is in the test extra
        pass
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
        recorder.add_record({"loss": 0.5, **arrays}, step=10)
    run = isolated / recorder.recording_id
    hist = histogram_points(run)
    assert sorted(key for key, _, _ in hist) == sorted(arrays)
    (loss,) = [p for p in points(run) if p.step == 10]
    for key, attrs, dp in hist:
        values = np.asarray(arrays[key], dtype=np.float64).ravel()
        assert attrs["markov.step"] == 10 and dp.time_unix_nano == loss.time_unix_nano
        assert dp.count == values.size and dp.zero_count == np.count_nonzero(values == 0)
        assert dp.sum == pytest.approx(float(values.sum()), rel=1e-9, abs=1e-9)
        assert (dp.min, dp.max) == (values.min(), values.max())
        assert len(dp.positive.bucket_counts) <= 160 and len(dp.negative.bucket_counts) <= 160
        want: dict[int, int] = {}
        for v in values[values != 0]:
            index = bucket_of(float(v), dp.scale)
            index = index if v > 0 else -(10**9) - index
            want[index] = want.get(index, 0) + 1
        assert expanded(dp) == want, key
        assert sum(dp.positive.bucket_counts) + sum(dp.negative.bucket_counts) + dp.zero_count == (
            dp.count
        )


def test_nan_and_infinities_in_an_array_are_counted_not_summed(isolated: Path) -> None:
    """[1, 2, NaN, NaN, inf, -inf]: count 2, sum 3, min 1, max 2, and the non-finite counts in
    markov.nan_count / posinf_count / neginf_count."""
    with offline() as recorder:
        recorder.add_record({"g": np.array([1.0, 2.0, np.nan, np.nan, np.inf, -np.inf])})
    ((_, attrs, dp),) = histogram_points(isolated / recorder.recording_id)
    assert (dp.count, dp.sum, dp.min, dp.max) == (2, 3.0, 1.0, 2.0)
    assert (attrs["markov.nan_count"], attrs["markov.posinf_count"]) == (2, 1)
    assert attrs["markov.neginf_count"] == 1


def test_the_caller_pays_one_copy_so_later_changes_to_its_array_are_not_recorded(
    isolated: Path,
) -> None:
    """The array (and a CPU tensor) is copied at the call: zeroing it right after add_record
    changes nothing recorded."""
    array = np.arange(1.0, 101.0)
    tensors = []
    try:
        import torch

        tensors = [torch.arange(1.0, 101.0)]
    except ImportError:  # pragma: no cover
        pass
    with offline(batch_processing_interval=30) as recorder:  # the flusher buckets at stop()
        recorder.add_record({"a": array, **{f"t{i}": t for i, t in enumerate(tensors)}})
        array[:] = 0.0
        for t in tensors:
            t.zero_()
    for _, _, dp in histogram_points(isolated / recorder.recording_id):
        assert (dp.count, dp.sum, dp.zero_count) == (100, 5050.0, 0)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (np.array([]), "empty"),
        (np.array([1.0, None]), "object"),
        (np.array(["a", "b"]), "<U1"),
        ([[1.0, 2.0], [3.0]], "not rectangular"),
        (["a", 1.0], "<U"),
        ([], "empty"),
    ],
    ids=["empty", "object", "strings", "ragged", "list-of-mixed", "empty-list"],
)
def test_an_array_that_is_no_distribution_is_refused_and_keeps_nothing_of_its_record(
    isolated: Path, value: Any, why: str
) -> None:
    """Empty, object or string dtype, ragged: ConfigError naming the key and why; the record's
    numbers, arrays and texts are not kept, and its step is not used."""
    with offline() as recorder:
        with pytest.raises(ConfigError, match=rf"'bad'.*{why}"):
            recorder.add_record({"ok": 1.0, "fine": [1.0, 2.0], "t": "x", "bad": value})
        recorder.add_record({"ok": 2.0})
    run = isolated / recorder.recording_id
    assert [(p.key, p.value, p.step) for p in points(run)] == [("ok", 2.0, 0)]
    assert histogram_points(run) == []
    assert [r for r in log_records(run) if r.event_name == "markov.text"] == []


# -- texts (goal 3) ------------------------------------------------------------------------------


def test_a_text_becomes_a_log_record_with_its_key_step_and_time(isolated: Path) -> None:
    """{'sample': 'the cat sat'} at step 3: one log record in logs.jsonl, body the text,
    markov.key and markov.step attributes, the record's time; numbers beside it stay points."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0, "sample": "the cat sat"}, step=3)
        recorder.add_record({"sample": "λ — ünïcode\n"})
    run = isolated / recorder.recording_id
    texts = [r for r in log_records(run) if r.event_name == "markov.text"]
    got = [(r.body.string_value, attributes(r.attributes)) for r in texts]
    assert got == [
        ("the cat sat", {"markov.key": "sample", "markov.step": 3}),
        ("λ — ünïcode\n", {"markov.key": "sample", "markov.step": 4}),
    ]
    (loss,) = points(run)
    assert texts[0].time_unix_nano == loss.time_unix_nano and loss.step == 3


def test_a_text_past_64_kib_is_refused_naming_the_key(isolated: Path) -> None:
    """65536 UTF-8 bytes are kept; one more is a ConfigError naming the key, nothing kept."""
    with offline() as recorder:
        recorder.add_record({"t": "é" * 32768})
        with pytest.raises(ConfigError, match=r"'t'.*65537 bytes.*65536"):
            recorder.add_record({"t": "é" * 32768 + "x", "n": 1.0})
    run = isolated / recorder.recording_id
    texts = [r for r in log_records(run) if r.event_name == "markov.text"]
    assert [len(r.body.string_value) for r in texts] == [32768]
    assert points(run) == []


def test_numpy_is_imported_only_once_an_array_is_recorded(tmp_path: Path) -> None:
    """numpy is no dependency of the recorder: numbers and texts do not import it."""
    code = (
        "import sys\n"
        "from markov_otel import ExperimentRecorder, RecordingMode\n"
        "with ExperimentRecorder('n', recording_mode=RecordingMode.OFFLINE) as r:\n"
        "    r.add_record({'a': 1.0, 't': 'text'})\n"
        "    assert 'numpy' not in sys.modules, 'numpy imported for numbers'\n"
        "    r.add_record({'d': [1.0, 2.0]})\n"
        "assert 'numpy' in sys.modules\n"
    )
    env = {**os.environ, "MARKOV_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


# -- end to end (goal 4): the backend keeps both; the read API gives the same offline and online


def test_distributions_and_texts_read_back_the_same_from_the_run_dir_and_the_backend(
    backend: Backend, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrays at steps 0-4 and texts at steps 0 and 4, online: read.distributions() and
    read.texts() give the same, each point once, offline (the run dir) and online (the
    backend); the buckets add up to the count and hold the array's elements."""
    recorder = online_recorder(backend.url, backend.token)
    with recorder:
        for step in range(5):
            values = np.linspace(-1.0, 2.0 + step, 50)
            record: dict[str, Any] = {"loss": 1.0 / (step + 1), "w": values}
            if step in (0, 4):
                record["sample"] = f"text at {step}"
            recorder.add_record(record)
    rid = recorder.recording_id
    assert backend.records(rid, "loss")  # the run reached the backend
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    offline_d = read.distributions(rid, "w", source=isolated)
    online_d = read.distributions(rid, "w", source=backend.url)
    assert offline_d == online_d and [d.step for d in offline_d] == [0, 1, 2, 3, 4]
    for step, d in enumerate(offline_d):
        assert d.count == 50 and d.max == 2.0 + step and d.min == -1.0
        assert sum(n for _, _, n in d.buckets()) == 50
        assert all(lo <= hi for lo, hi, _ in d.buckets())
    offline_t = read.texts(rid, "sample", source=isolated)
    assert offline_t == read.texts(rid, "sample", source=backend.url)
    assert [(t.step, t.text) for t in offline_t] == [(0, "text at 0"), (4, "text at 4")]
    assert read.texts(rid, "other", source=backend.url) == []


def test_a_replayed_batch_of_distributions_is_stored_once(backend: Backend, isolated: Path) -> None:
    """The same metrics line POSTed twice with one Idempotency-Key (a sender's retry): its
    histogram points are kept once, and the answer rejects none of them."""
    with offline() as recorder:
        recorder.add_record({"w": [1.0, 2.0, 3.0]}, step=7)
    (line,) = [x for x in lines(isolated / recorder.recording_id, "metrics") if "exponential" in x]
    headers = {**backend.headers, "Content-Type": "application/json", "Idempotency-Key": "k:1"}
    for _ in range(2):
        answer = requests.post(f"{backend.url}/v1/metrics", data=line, headers=headers, timeout=30)
        assert answer.status_code == 200 and "rejected" not in answer.text, answer.text
    got = requests.get(
        f"{backend.url}/api/v1/recordings/{recorder.recording_id}/distributions",
        params={"key": "w"},
        headers=backend.headers,
        timeout=30,
    ).json()
    assert [(d["step"], d["count"], d["sum"]) for d in got] == [(7, 3, 6.0)]


def test_a_protobuf_body_of_distributions_is_stored_as_the_json_one_is(
    backend: Backend, isolated: Path
) -> None:
    """A recorded array's line sent as protobuf (what a collector's otlp_http exporter sends) is
    kept like its OTLP-JSON twin: the same distribution, and the answer rejects none of it."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    with offline() as recorder:
        recorder.add_record({"w": [1.0, 2.0, 3.0, -4.0, 0.0]}, step=3)
    (line,) = [x for x in lines(isolated / recorder.recording_id, "metrics") if "exponential" in x]
    body = json_format.Parse(line, ExportMetricsServiceRequest()).SerializeToString()
    headers = {**backend.headers, "Content-Type": "application/x-protobuf"}
    answer = requests.post(f"{backend.url}/v1/metrics", data=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert not answer.content or b"rejected" not in answer.content, answer.content
    got = requests.get(
        f"{backend.url}/api/v1/recordings/{recorder.recording_id}/distributions",
        params={"key": "w"},
        headers=backend.headers,
        timeout=30,
    ).json()
    assert [(d["step"], d["count"], d["sum"], d["min"], d["max"]) for d in got] == [
        (3, 5, 2.0, -4.0, 3.0)
    ]
    point = got[0]
    buckets = point["positive"]["bucket_counts"] + point["negative"]["bucket_counts"]
    assert sum(buckets) + point["zero_count"] == 5


def test_mkv_export_writes_distributions_and_texts_as_jsonl_and_parquet(
    isolated: Path, tmp_path: Path
) -> None:
    """`mkv export RUN --distributions w` and `--texts s`: one row per step, in JSON Lines
    and Parquet, with the buckets and the texts as recorded."""
    import pyarrow.parquet as pq

    from markov_otel.cli.main import main

    with offline() as recorder:
        for step in range(3):
            recorder.add_record({"w": [1.0, 2.0, float(step + 3)], "s": f"t{step}"})
    rid = recorder.recording_id
    out = tmp_path / "d.jsonl"
    assert main(["export", rid, "--distributions", "w", "--format", "jsonl", "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["step"], r["count"], r["sum"], r["max"]) for r in rows] == [
        (s, 3, 6.0 + s, float(s + 3)) for s in range(3)
    ]
    assert all(sum(r["positive"]) == 3 for r in rows)
    table = tmp_path / "t.parquet"
    assert main(["export", rid, "--texts", "s", "--format", "parquet", "-o", str(table)]) == 0
    got = pq.read_table(table).to_pylist()
    assert [(r["step"], r["text"]) for r in got] == [(0, "t0"), (1, "t1"), (2, "t2")]
    dists = tmp_path / "d.parquet"
    assert (
        main(["export", rid, "--distributions", "w", "--format", "parquet", "-o", str(dists)]) == 0
    )
    assert [r["count"] for r in pq.read_table(dists).to_pylist()] == [3, 3, 3]


def test_the_run_page_draws_a_heatmap_per_distribution_and_a_table_of_texts(
    backend: Backend,
) -> None:
    """The run page: one heatmap figure per recorded array key, a column per step, and the
    texts (escaped) in a table by step."""
    recorder = online_recorder(backend.url, backend.token)
    with recorder:
        for step in range(12):
            recorder.add_record({"w": np.linspace(-1.0, 1.0 + step, 64), "loss": 1.0})
        recorder.add_record({"sample": "<b>not bold</b>"}, step=3)
    rid = recorder.recording_id
    assert backend.records(rid, "loss")
    page = requests.get(f"{backend.url}/recordings/{rid}", headers=backend.headers, timeout=30).text
    assert page.count('<figure class="distribution" data-key="w">') == 1
    assert "steps 0 to 11" in page
    assert "<td>sample</td><td>3</td><td><pre>&lt;b&gt;not bold&lt;/b&gt;</pre></td>" in page


# -- watch (goal 2) ------------------------------------------------------------------------------


def test_watch_records_norms_and_distributions_every_n_passes_without_taking_steps(
    isolated: Path,
) -> None:
    """watch(model, every=2, log="all") over 5 training steps: parameters and gradients of
    passes 1, 3, 5 at the loop's steps 0, 2, 4 (norms as numbers, >1-element tensors as
    distributions); the loop's own steps stay 0-4; after remove() nothing more."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    first_norm = float(model[0].weight.detach().norm())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with offline() as recorder:
        watch = recorder.watch(model, every=2, log="all")
        for _ in range(5):
            optimizer.zero_grad()
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            optimizer.step()
            recorder.add_record({"loss": loss.item()})
        watch.remove()
        model(torch.randn(2, 4)).sum().backward()
    run = isolated / recorder.recording_id
    by_key: dict[str, list[int]] = {}
    for p in points(run):
        by_key.setdefault(p.key, []).append(p.step)
    assert by_key.pop("loss") == [0, 1, 2, 3, 4]
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert by_key == {
        f"{k}/{n}/norm": [0, 2, 4] for k in ("parameters", "gradients") for n in names
    }
    hists: dict[str, list[int]] = {}
    for key, attrs, _ in histogram_points(run):
        hists.setdefault(key, []).append(attrs["markov.step"])
    want = {f"{k}/{n}": [0, 2, 4] for k in ("parameters", "gradients") for n in names[:3]}
    assert hists == want  # 2.bias has one element: a norm only
    (norm0,) = [p.value for p in points(run) if p.key == "parameters/0.weight/norm" and p.step == 0]
    assert norm0 == pytest.approx(first_norm)


def test_watch_refuses_what_is_no_module_and_bad_settings() -> None:
    """A non-module, every=0 and an unknown log are ConfigErrors naming the argument."""
    torch = pytest.importorskip("torch")
    recorder = offline()
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        recorder.watch(object())
    with pytest.raises(ConfigError, match="every=0"):
        recorder.watch(torch.nn.Linear(2, 2), every=0)
    with pytest.raises(ConfigError, match="log='weights'"):
        recorder.watch(torch.nn.Linear(2, 2), log="weights")


def test_arrays_beside_a_tight_loop_with_the_encoder_process_are_each_stored_once(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encoder_process=always owns the metrics file while it holds batches: 20k records with
    an array every 500 still give every point and every histogram exactly once, in whole lines."""
    monkeypatch.setenv("MARKOV_ENCODER_PROCESS", "always")
    with offline(batch_size=200) as recorder:
        for i in range(20_000):
            record: dict[str, Any] = {"i": i}
            if i % 500 == 0:
                record["w"] = [float(i), float(i) + 1.0]
            recorder.add_record(record)
    run = isolated / recorder.recording_id
    assert sorted(p.value for p in points(run)) == list(range(20_000))
    hist = histogram_points(run)
    assert sorted(attrs["markov.step"] for _, attrs, _ in hist) == list(range(0, 20_000, 500))
    assert all(dp.sum == 2 * attrs["markov.step"] + 1 for _, attrs, dp in hist)


def test_a_resumed_recording_whose_last_line_is_an_array_goes_on_after_its_step(
    isolated: Path,
) -> None:
    """The run dir ends with a histogram line (step 9): recording_id= resumes at step 10."""
    with offline() as first:
        first.add_record({"loss": 1.0}, step=5)
        first.add_record({"w": [1.0, 2.0]}, step=9)
    info = json.loads((isolated / first.recording_id / "recording.json").read_text())
    info["last_step"] = 0  # as if recording.json were saved before the crash: the spool rules
    (isolated / first.recording_id / "recording.json").write_text(json.dumps(info))
    with offline(recording_id=first.recording_id) as again:
        again.add_record({"loss": 2.0})
    got = [(p.value, p.step) for p in points(isolated / first.recording_id)]
    assert got == [(1.0, 5), (2.0, 10)]
