"""Reading runs back (markov_otel.read) and `mkv export`: what comes back is what was recorded,
offline and from the backend, NaN and infinities included."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from backend_fixture import Backend, online_recorder

from markov_otel import ExperimentRecorder, RecordingMode, read
from markov_otel.cli.main import main
from markov_otel.errors import ConfigError

INF = float("inf")
# step -> record; loss carries NaN and both infinities, val/loss only every other step.
RECORDED: dict[int, dict[str, Any]] = {
    step: {"loss": loss, "acc": step * 10} | ({"val": {"loss": step / 8}} if step % 2 == 0 else {})
    for step, loss in zip(
        (0, 1, 2, 5, 7, 8), (0.9, float("nan"), INF, -INF, 0.25, 1e-300), strict=True
    )
}
KEYS = ["acc", "loss", "val/loss"]


def flat(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "val"}
    if "val" in record:
        out["val/loss"] = record["val"]["loss"]
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def record(recorder: ExperimentRecorder) -> tuple[float, float]:
    """Record RECORDED; the wall-clock interval it took (seconds)."""
    began = time.time()
    with recorder:
        for step, values in RECORDED.items():
            recorder.add_record(values, step=step)
    return began, time.time()


def check_history(frame: pd.DataFrame, began: float, ended: float) -> None:
    assert list(frame.index) == list(RECORDED) and frame.index.name == "step"
    assert list(frame.columns) == [*KEYS, "time"]
    for step, values in RECORDED.items():
        expected = flat(values)
        for key in KEYS:
            got = frame.at[step, key]
            if key in expected:
                assert same(float(got), float(expected[key])), (step, key, got)
            else:
                assert math.isnan(got)  # not recorded at this step
    times = frame["time"]
    assert str(times.dt.tz) == "UTC"
    assert times.is_monotonic_increasing
    assert began - 1 <= times.iloc[0].timestamp() and times.iloc[-1].timestamp() <= ended + 1


def test_history_offline_is_what_was_recorded(isolated: Path) -> None:
    """history() of a local run: one row per step, one column per key, NaN/±inf as floats."""
    recorder = ExperimentRecorder("read", recording_mode=RecordingMode.OFFLINE)
    began, ended = record(recorder)
    check_history(read.history(recorder.recording_id), began, ended)
    only = read.history(recorder.recording_id, ["loss"], source=isolated)
    assert list(only.columns) == ["loss", "time"]


def test_history_online_is_what_was_recorded_and_equals_the_local_copy(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history(source=URL) reads the backend with the configured API key; the frame equals the
    one read from the run dir, times included."""
    recorder = online_recorder(backend.url, backend.token)
    began, ended = record(recorder)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    online = read.history(recorder.recording_id, source=backend.url)
    check_history(online, began, ended)
    pd.testing.assert_frame_equal(online, read.history(recorder.recording_id))


def hparams(lr: float) -> dict[str, Any]:
    return {"opt": {"name": "sgd", "lr": lr}, "layers": 3}


def two_runs(**kwargs: Any) -> list[ExperimentRecorder]:
    made = []
    for project, lr in (("vision", 0.1), ("text", 0.01)):
        recorder = ExperimentRecorder(
            f"run-{lr}", project_id=project, hyper_parameters=hparams(lr), **kwargs
        )
        with recorder:
            recorder.add_record({"loss": lr})
            recorder.summary.add_training_loss(lr / 2)
        made.append(recorder)
    return made


def check_runs(table: pd.DataFrame, made: list[ExperimentRecorder]) -> None:
    assert list(table["id"]) == [r.recording_id for r in made]  # oldest first
    assert list(table.columns[:7]) == [
        "id", "name", "project_id", "status", "start", "duration", "points"
    ]  # fmt: skip
    assert {"hparam.opt.name", "hparam.opt.lr", "hparam.layers", "summary.training_loss"} <= set(
        table.columns
    )
    assert list(table["hparam.opt.lr"]) == [0.1, 0.01]
    assert list(table["hparam.opt.name"]) == ["sgd", "sgd"]
    assert list(table["summary.training_loss"]) == [0.05, 0.005]
    assert list(table["status"]) == ["finished", "finished"]
    assert str(table["start"].dt.tz) == "UTC"
    assert (table["duration"] >= 0).all()


def test_runs_offline_flattens_nested_hyperparameters(isolated: Path) -> None:
    """runs(): one row per local run, `hparam.a.b` columns, summary columns, project filter."""
    made = two_runs(recording_mode=RecordingMode.OFFLINE)
    table = read.runs()
    check_runs(table, made)
    assert list(table["points"]) == [1, 1]
    assert list(read.runs(project_id="text")["id"]) == [made[1].recording_id]


def test_runs_online_flattens_nested_hyperparameters(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs(URL): the backend's recordings as the same columns, project filter included."""
    made = two_runs(
        recording_mode=RecordingMode.ONLINE, endpoint=backend.url, api_key=backend.token
    )
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    check_runs(read.runs(backend.url), made)
    assert list(read.runs(backend.url, project_id="vision")["id"]) == [made[0].recording_id]


# -- mkv export ---------------------------------------------------------------------------------


def exported_points(recorder: ExperimentRecorder) -> list[tuple[int, str, Any]]:
    """(step, key, value) in record order, as RECORDED says."""
    return [(s, k, v) for s, values in RECORDED.items() for k, v in sorted(flat(values).items())]


def as_float(text: str) -> float:
    return float(text)


@pytest.fixture
def exported(isolated: Path) -> ExperimentRecorder:
    recorder = ExperimentRecorder("export", recording_mode=RecordingMode.OFFLINE)
    record(recorder)
    return recorder


def check_rows(rows: list[tuple[int, str, str, float]], recorder: ExperimentRecorder) -> None:
    """Rows (step, time, key, value) hold every recorded point, sorted as recorded."""
    want = exported_points(recorder)
    got = sorted(((s, k, v) for s, _, k, v in rows), key=lambda r: (r[0], r[1]))
    assert len(got) == len(want)
    for (gs, gk, gv), (ws, wk, wv) in zip(got, want, strict=True):
        assert (gs, gk) == (ws, wk) and same(float(gv), float(wv)), (gs, gk, gv, wv)
    times = [t for _, t, _, _ in rows]
    assert times == sorted(times)  # record order; ISO times sort as text


def test_export_csv_to_stdout_parses_back(
    exported: ExperimentRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv export RUN` writes CSV (step,time,key,value) to stdout; csv + float() read it back,
    NaN and infinities included."""
    assert main(["export", exported.recording_id[:10]]) == 0
    reader = csv.reader(io.StringIO(capsys.readouterr().out))
    assert next(reader) == ["step", "time", "key", "value"]
    rows = [(int(s), t, k, as_float(v)) for s, t, k, v in reader]
    check_rows(rows, exported)
    assert all(t.endswith("Z") and len(t) == 30 for _, t, _, _ in rows)  # nanoseconds, UTC


def test_export_jsonl_parses_back(
    exported: ExperimentRecorder, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--format jsonl -o FILE: one JSON object per point; non-finite values as the protocol's
    strings."""
    out = tmp_path / "points.jsonl"
    assert main(["export", exported.recording_id, "--format", "jsonl", "-o", str(out)]) == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows([(d["step"], d["time"], d["key"], float(d["value"])) for d in docs], exported)
    assert {d["value"] for d in docs if isinstance(d["value"], str)} == {
        "NaN", "Infinity", "-Infinity"
    }  # fmt: skip


def test_export_parquet_parses_back(exported: ExperimentRecorder, tmp_path: Path) -> None:
    """--format parquet -o FILE: pyarrow reads back step, time (ns, UTC), key, value."""
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "points.parquet"
    assert main(["export", exported.recording_id, "--format", "parquet", "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["step", "time", "key", "value"]
    assert str(table.schema.field("time").type) == "timestamp[ns, tz=UTC]"
    rows = list(
        zip(
            table.column("step").to_pylist(),
            table.column("time").cast("int64").to_pylist(),
            table.column("key").to_pylist(),
            table.column("value").to_pylist(),
            strict=True,
        )
    )
    check_rows(rows, exported)


def test_missing_optional_packages_are_named(exported: ExperimentRecorder) -> None:
    """Without pandas, read.history raises ImportError naming the extra; without pyarrow,
    `mkv export --format parquet` is one line naming it (csv still works)."""
    no_pandas = (
        "import sys; sys.modules['pandas'] = None\n"
        "from markov_otel import read\n"
        f"try:\n    read.history({exported.recording_id!r})\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_pandas], capture_output=True, text=True, timeout=60
    )
    assert "markov-otel[pandas]" in result.stdout, result.stderr
    no_pyarrow = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from markov_otel.cli.main import main\n"
        f"sys.exit(main(['export', {exported.recording_id!r}, '--format', 'parquet', "
        "'-o', 'x.parquet']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_pyarrow], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "markov-otel[parquet]" in result.stderr


def test_export_by_prefix_from_the_backend(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`mkv export PREFIX --endpoint URL` resolves the prefix against the backend (the run is not
    in the local runs directory) and writes every point; an unknown prefix exits 1 naming the
    backend and leaves no file."""
    recorder = online_recorder(backend.url, backend.token)
    record(recorder)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    monkeypatch.setenv("MARKOV_DIR", str(tmp_path / "elsewhere"))  # nothing local
    out = tmp_path / "points.jsonl"
    prefix = recorder.recording_id[:8]
    args = ["export", prefix, "--endpoint", backend.url, "--format", "jsonl", "-o", str(out)]
    assert main(args) == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows([(d["step"], d["time"], d["key"], float(d["value"])) for d in docs], recorder)
    missing = tmp_path / "missing.parquet"
    args = ["export", "zzzz", "--endpoint", backend.url, "--format", "parquet", "-o", str(missing)]
    assert main(args) == 1
    assert list(tmp_path.glob("*missing*")) == []  # neither the file nor a partial one


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_failed_export_leaves_no_file(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str
) -> None:
    """An export that fails once writing has begun (the backend killed: every read after the
    id is resolved fails) exits 1 and leaves neither the file nor a partial one."""
    pytest.importorskip("pyarrow")
    recorder = online_recorder(backend.url, backend.token)
    record(recorder)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    from markov_otel import read as reader

    run_id = recorder.recording_id
    points = reader.points(run_id, source=backend.url)
    backend.kill()  # the generator reads only when the writer asks for the first point
    from markov_otel.cli import export
    from markov_otel.errors import MarkovError

    out = tmp_path / f"points.{fmt}"
    with pytest.raises(MarkovError):
        export.write_file(points, fmt, out)
    assert list(tmp_path.glob("*points*")) == []


def test_csv_export_neutralises_formulas_and_quotes_carriage_returns(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys beginning `=`, `+`, `-`, `@`, tab or CR get a leading `'` in CSV (OWASP); a key
    holding `\\r` is quoted, so the csv module reads back exactly one row per point."""
    keys = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)", "\tx", "\ry", "a\rb", "plain", 'q"uote']
    recorder = ExperimentRecorder("csv", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record(dict.fromkeys(keys, -1.5), step=0)
    assert main(["export", recorder.recording_id]) == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert rows[0] == ["step", "time", "key", "value"] and len(rows) == len(keys) + 1
    got = sorted(k for _, _, k, _ in rows[1:])
    want = sorted(("'" + k if k[0] in "=+-@\t\r" else k) for k in keys)
    assert got == want
    assert {v for *_, v in rows[1:]} == {"-1.5"}  # numbers stay numbers, sign and all


def test_history_of_several_runs_from_the_backend_in_one_call(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history([ids], source=URL) gives {id: frame} in the order asked, each frame equal to the
    run's local copy; a key one run lacks is a NaN column there; max_points=10 leaves at most
    10 points per key and keeps the one spike; max_points on a local run is a ConfigError."""
    first = online_recorder(backend.url, backend.token)
    record(first)
    second = online_recorder(backend.url, backend.token, name="long")
    with second:
        for step in range(500):
            second.add_record({"loss": 1000.0 if step == 321 else step / 500}, step=step)
            if step % 2:
                second.add_record({"loss": step / 1000}, step=step)  # twice at a step: last wins
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    ids = [second.recording_id, first.recording_id]
    frames = read.history(ids, ["loss", "acc"], source=backend.url)
    assert list(frames) == ids
    for rid in ids:
        pd.testing.assert_frame_equal(frames[rid], read.history(rid, ["loss", "acc"]))
    long = frames[second.recording_id]
    assert len(long) == 500 and long["acc"].isna().all()
    assert long.at[7, "loss"] == 7 / 1000 and long.at[8, "loss"] == 8 / 500
    small = read.history(ids, ["loss"], source=backend.url, max_points=10)
    few = small[second.recording_id]
    assert 2 <= len(few) <= 10 and few["loss"].max() == 1000.0 and 321 in few.index
    assert set(small[first.recording_id].index) <= set(RECORDED)
    with pytest.raises(ConfigError, match="max_points"):
        read.history(first.recording_id, source=None, max_points=10)
