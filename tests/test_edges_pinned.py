"""Edges that a mutation pass (issue 26) found no test pinning: each test here fails with the
hand-made mutant its docstring names, and passes with the code as it is."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from backend_fixture import Backend, online_recorder
from flaky_proxy import FlakyProxy

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.errors import ConfigError
from markov_otel.otel.encoding import layout
from markov_otel.recording.distributed import Launch, run_dir_name
from markov_otel.rules import check_step
from markov_otel.shipping import runs
from markov_otel.shipping.spool import Spool

LOADED = 8.0  # seconds a loaded 2-core machine may add to a bound (scheduling, not waiting)


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("pinned", recording_mode=RecordingMode.OFFLINE, **kwargs)


def use(server: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKOV_ENDPOINT", server.url)
    monkeypatch.setenv("MARKOV_API_KEY", server.token)


def recording(server: Backend, rid: str) -> dict[str, Any]:
    answer = requests.get(
        f"{server.url}/api/v1/recordings/{rid}", headers=server.headers, timeout=30
    )
    answer.raise_for_status()
    return dict(answer.json())


# -- values ----------------------------------------------------------------------------------


def test_the_int64_ends_are_steps_and_one_past_them_is_refused(isolated: Path) -> None:
    """2**63-1 and -2**63 are steps (as plain ints, not only np.int64), stored as given;
    2**63 is refused. Mutant: check_step's `<=` made `<`."""
    assert check_step(2**63 - 1) == 2**63 - 1 and check_step(-(2**63)) == -(2**63)
    with pytest.raises(ConfigError, match="int64"):
        check_step(2**63)
    with offline() as rec:
        rec.add_record({"loss": 1.0}, step=2**63 - 1)
    assert [p.step for p in runs.points(Spool(rec.run_dir), "loss")] == [2**63 - 1]


def test_a_batch_of_one_shape_keeps_its_first_records_key_order() -> None:
    """layout(): records with the same keys in other orders go as one run in the first
    record's order (what the encoded line lists first). Mutant: the keys sorted."""
    grouped, split = layout([{"b": 1.0, "a": 2.0}, {"a": 3.0, "b": 4.0}])
    assert grouped == [(("b", "a"), 0, 2)]
    assert split == (("b", "a"), [[1.0, 4.0], [2.0, 3.0]])


def test_history_shows_the_last_value_of_a_step_recorded_twice(isolated: Path) -> None:
    """A key recorded twice at one step: history() shows the later value (as documented),
    points() both. Mutant: drop_duplicates keeping the first."""
    from markov_otel import read

    with offline() as rec:
        rec.add_record({"loss": 1.0}, step=5)
        rec.add_record({"loss": 2.0}, step=5)
        rec.add_record({"loss": 3.0}, step=6)
    frame = read.history(rec.recording_id)
    assert frame["loss"].to_dict() == {5: 2.0, 6: 3.0}
    assert len(list(read.points(rec.recording_id))) == 3


def test_a_rank_dir_of_exactly_64_characters_is_taken() -> None:
    """`<id>.rank1` of 64 characters is a valid run dir; one more character is refused.
    Mutant: the length check `> 64` made `>= 64`."""
    launch = Launch(rank=1, world_size=2, local_rank=1, restart=0, records_values=True,
                    tag_rank=False)  # fmt: skip
    fits = "r" * (64 - len(".rank1"))
    assert run_dir_name(fits, launch) == fits + ".rank1"
    with pytest.raises(ConfigError, match="64 characters"):
        run_dir_name(fits + "r", launch)


# -- the spool -------------------------------------------------------------------------------


def test_lines_leaves_a_torn_last_line_unread(tmp_path: Path) -> None:
    """A line without its newline (a write cut by a crash) is not yielded, and the offsets
    of the whole lines end where each line does. Mutant: the torn tail yielded."""
    spool = Spool(tmp_path)
    spool.path("metrics").write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    got = [(line.number, line.end, line.data) for line in spool.lines("metrics")]
    assert got == [(0, 8, b'{"a":1}'), (1, 16, b'{"b":2}')]


# -- sending ---------------------------------------------------------------------------------


def test_a_line_a_fifth_over_the_backends_limit_goes_in_parts_under_it(tmp_path: Path) -> None:
    """One line ~1.2x the backend's limit (one record of 2000 long keys): after the 413 the
    sender splits it into parts under the limit (0.9x), and every point arrives; nothing is
    set aside. Mutant: parts of 1.5x the limit (the line goes whole again, and is set aside).
    Long keys, one point each: the split's size estimate is close to the bytes sent."""
    server = Backend(tmp_path / "b", extra_args=["--max-body-bytes", "500000"])
    keys = [f"layer{i:04d}/" + "w" * 140 for i in range(2000)]
    rec = online_recorder(server.url, server.token, batch_processing_interval=60)
    with rec:
        rec.add_record(dict.fromkeys(keys, 0.5))
    sizes = [len(x) for x in (rec.run_dir / "metrics.jsonl").read_bytes().split()]
    assert 500_000 < max(sizes) < 1.5 * 500_000
    for key in (keys[0], keys[-1]):
        assert [r["step"] for r in server.records(rec.recording_id, key)] == [0]
    assert runs.set_aside(Spool(rec.run_dir), server.url) == []


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A URL whose peer takes connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def test_sync_timeout_bounds_each_request_to_a_peer_that_never_answers(
    silent_peer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mkv sync RUN --timeout 1` against a peer that never answers gives up within its
    timeout (with room for a loaded machine); it took 30.3 s when a request's own 30 s
    timeout was not cut to the deadline. Mutant: the request timeout not bounded by it."""
    with offline() as rec:
        rec.add_record({"loss": 1.0})
    monkeypatch.setenv("MARKOV_ENDPOINT", silent_peer)
    monkeypatch.setenv("MARKOV_API_KEY", "token")
    began = time.monotonic()
    assert main(["sync", rec.recording_id, "--timeout", "1"]) == 1
    assert time.monotonic() - began < 1 + LOADED


def test_sync_sends_the_final_patch_with_what_the_resource_cannot_carry(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary value too long for the resource (over 1024 characters) reaches the backend
    only by the PATCH that `mkv sync` ends with; the status too. Mutant: sync done before its
    PATCH."""
    long = "x" * 2000
    with offline() as rec:
        rec.add_record({"loss": 1.0})
        rec.summary.add("notes", long)
    use(backend, monkeypatch)
    assert main(["sync", rec.recording_id]) == 0
    stored = recording(backend, rec.recording_id)
    assert stored["summary"].get("notes") == long, json.dumps(stored)[:500]
    assert stored["status"] == "finished"


def test_stop_sends_the_final_patch_with_what_the_resource_cannot_carry(backend: Backend) -> None:
    """The same for stop() of an ONLINE run: the summary set last reaches the backend.
    Mutant: stop() done before its PATCH."""
    long = "y" * 2000
    rec = online_recorder(backend.url, backend.token, batch_processing_interval=60)
    with rec:
        rec.add_record({"loss": 1.0})
        rec.summary.add("notes", long)
    stored = recording(backend, rec.recording_id)
    assert stored["summary"].get("notes") == long, json.dumps(stored)[:500]
    assert stored["status"] == "finished"


@pytest.mark.slow
def test_a_429s_retry_after_is_waited_before_the_line_goes_again(backend: Backend) -> None:
    """The first metrics line answered 429 with Retry-After: 2 goes again no sooner than 2 s
    later (a lower bound: a loaded machine only makes it later), then is stored once.
    Mutant: Retry-After ignored (backoff from 0.2 s)."""
    with FlakyProxy(backend.url, scripted={":metrics:0": ["429"]}, retry_after="2") as proxy:
        rec = online_recorder(proxy.url, backend.token, sync_data_timeout=60)

        def tries() -> list[float]:
            return [t for key, t in proxy.arrivals if key and key.endswith(":metrics:0")]

        with rec:  # stopped only after the second try: stop() hurries the sender
            rec.add_record({"loss": 1.0})
            deadline = time.monotonic() + 60
            while len(tries()) < 2:
                assert time.monotonic() < deadline, proxy.arrivals
                time.sleep(0.05)
        tries = tries()
    assert proxy.counts["429"] == 1 and len(tries) == 2, proxy.arrivals
    assert tries[1] - tries[0] >= 2.0
    assert [r["step"] for r in backend.records(rec.recording_id, "loss")] == [0]


@pytest.mark.slow
def test_a_401_on_a_line_pauses_sending_and_sets_nothing_aside(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A line answered 401 (the token, not the line) pauses the sender: nothing is set aside,
    the line stays unsent, what is said names the 401 and `mkv sync`; once the token is good
    again a sync sends it. Mutant: 401 among the line refusals (the line set aside)."""
    with FlakyProxy(backend.url, scripted={":metrics:0": ["401"]}) as proxy:
        rec = online_recorder(proxy.url, backend.token)
        with rec:
            rec.add_record({"loss": 1.0})
    assert proxy.counts["401"] == 1
    assert runs.set_aside(Spool(rec.run_dir), proxy.url) == []
    assert runs.unsent_lines(Spool(rec.run_dir), proxy.url) > 0
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert said and all("401" in m and f"mkv sync {rec.recording_id}" in m for m in said), said
    use(backend, monkeypatch)
    assert main(["sync", rec.recording_id]) == 0
    assert [r["step"] for r in backend.records(rec.recording_id, "loss")] == [0]


# -- what reaches the disk, seen from the system calls ------------------------------------------

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is missing")


def syncs_of(tmp_path: Path, script: str, **env: str) -> list[tuple[str, str]]:
    """Run `script` in a fresh interpreter under strace; its (and its children's) fsync and
    fdatasync calls as (call, path of the file)."""
    log = tmp_path / "strace.log"
    code = textwrap.dedent(script)
    done = subprocess.run(
        ["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log),
         sys.executable, "-c", code],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return re.findall(r"(fsync|fdatasync)\(\d+<([^>]*)>\) = 0", log.read_text())


@needs_strace
def test_stop_fsyncs_the_metrics_file(tmp_path: Path) -> None:
    """stop() ends with an fsync of metrics.jsonl (a finished run survives a power cut).
    Mutant: Spool.sync() without its fsync."""
    calls = syncs_of(tmp_path, """
        from markov_otel import ExperimentRecorder, RecordingMode
        with ExperimentRecorder("synced", recording_mode=RecordingMode.OFFLINE) as rec:
            rec.add_record({"loss": 1.0})
    """)  # fmt: skip
    assert [c for c, path in calls if path.endswith("/metrics.jsonl")].count("fsync") >= 1, calls


@needs_strace
@pytest.mark.slow
def test_the_encoder_process_starts_the_writeback_as_it_appends(tmp_path: Path) -> None:
    """A tight loop whose batches the process writes (~90 MB, past WRITEBACK_BYTES twice):
    the process's own fdatasync of metrics.jsonl runs before stop()'s fsync. Mutants: the
    writeback thread never started; its fdatasync a no-op."""
    calls = syncs_of(tmp_path, """
        from markov_otel import ExperimentRecorder, RecordingMode
        with ExperimentRecorder("written", recording_mode=RecordingMode.OFFLINE) as rec:
            for i in range(400_000):
                rec.add_record({"a": float(i), "b": 0.5})
    """, MARKOV_ENCODER_PROCESS="always")  # fmt: skip
    on_metrics = [c for c, path in calls if path.endswith("/metrics.jsonl")]
    assert "fdatasync" in on_metrics, calls


# -- alerts ----------------------------------------------------------------------------------


def gauge_data(name: str, value: float, time_ns: int) -> Any:
    """One gauge point as a MetricsData, as a MeterProvider hands it to a reader's exporter."""
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    point = NumberDataPoint(
        attributes={}, start_time_unix_nano=0, time_unix_nano=time_ns, value=value
    )
    metric = Metric(name=name, description="", unit="", data=Gauge(data_points=[point]))
    scope = ScopeMetrics(scope=InstrumentationScope("app"), metrics=[metric], schema_url="")
    resource = ResourceMetrics(resource=Resource.create({}), scope_metrics=[scope], schema_url="")
    return MetricsData(resource_metrics=[resource])


def test_alert_reader_skips_a_nan_point_neither_firing_nor_rearming() -> None:
    """A NaN point between two that hold (as SDKs older than the current one pass it through;
    the current one drops it before the reader sees it) neither fires nor re-arms the alert:
    one firing, not two. Mutant: AlertReader no longer skipping NaN."""
    from markov_otel import BinaryOperation, ExperimentAlertCondition
    from markov_otel.recording.alerts import AlertReader

    got: list[Any] = []
    condition = ExperimentAlertCondition("loss", BinaryOperation.GREATER_THAN, 1.0)
    reader = AlertReader([(condition, "diverging")], on_alert=got.append, interval_seconds=3600)
    try:
        for step, value in enumerate((2.0, math.nan, 3.0)):
            reader._exporter.export(gauge_data("loss", value, 1_700_000_000_000_000_000 + step))
    finally:
        reader.shutdown()
    assert [f.value for f in got] == [2.0]


@pytest.mark.slow
def test_stop_retries_a_dead_backend_at_once_whatever_the_backoff_reached() -> None:
    """A backend down all run: the sender's backoff grows to its cap (5-15 s a wait); stop()
    then tries a few times 0.2 s apart and gives up, instead of waiting out two full backoffs.
    The bound is the promise, with room for a loaded machine. Mutant: full backoff at stop."""
    from backend_fixture import dead_endpoint

    rec = online_recorder(dead_endpoint(), "token", sync_data_timeout=60)
    rec.start()
    rec.add_record({"loss": 1.0})
    sender = rec._sender
    deadline = time.monotonic() + 90
    while sender._attempt < 6:  # backoff(6) = 10 s x (0.5 .. 1.5)
        assert time.monotonic() < deadline, "the backoff never grew"
        time.sleep(0.1)
    began = time.monotonic()
    rec.stop()
    assert time.monotonic() - began < 8.0  # full backoffs: two waits of 5 s or more
    assert runs.unsent_lines(Spool(rec.run_dir)) > 0
