"""The edges of "nothing lost, nothing doubled" between the spool and the backend (issue 9).

A refused line, a batch wider than the backend's body limit, a second machine adding to a
recording, a resume after kill -9, a sync to a second backend, a peer that trickles its
answer, credentials in the endpoint URL: each is run for real against the reference backend.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_fixture import Backend, online_recorder
from flaky_proxy import FlakyProxy

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.shipping import runs
from markov_otel.shipping.spool import Spool

CHILD = Path(__file__).with_name("recording_child.py")


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("edges", recording_mode=RecordingMode.OFFLINE, **kwargs)


def use(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)


def steps(backend: Backend, rid: str, key: str) -> list[int]:
    return [r["step"] for r in backend.records(rid, key)]


def bad_line(rid: str, step: int) -> bytes:
    """A metrics line no backend stores ("many" is not a number), as a hand edit or another
    tool could leave in a run dir; the recorder itself refuses such values at the call."""
    doc = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "markov.recording.id", "value": {"stringValue": rid}}]
                },
                "scopeMetrics": [{"metrics": [{"name": "loss", "gauge": {"dataPoints": [
                    {"timeUnixNano": "1", "asDouble": "many", "attributes": [
                        {"key": "markov.step", "value": {"intValue": str(step)}}]}
                ]}}]}],
            }
        ]
    }  # fmt: skip
    return json.dumps(doc).encode() + b"\n"


def big_point_line(rid: str, step: int, size: int) -> bytes:
    """A metrics line of one point carrying `size` bytes of attribute: it cannot be split."""
    doc = json.loads(bad_line(rid, step))
    point = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    point["asDouble"] = 1.5
    point["attributes"].append({"key": "note", "value": {"stringValue": "x" * size}})
    return json.dumps(doc).encode() + b"\n"


# -- a refused line ----------------------------------------------------------------------------


def test_a_line_the_backend_refuses_is_set_aside_and_the_rest_flows_on(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 400 for one line: the lines after it are stored, the refused one is kept on disk with
    its reason, `mkv runs` and `mkv show` say so, and sync exits 1."""
    with offline(batch_size=5) as first:
        for i in range(10):
            first.add_record({"loss": float(i)})
    rid = first.recording_id
    with (first.run_dir / "metrics.jsonl").open("ab") as spool:
        spool.write(bad_line(rid, 9))
    with offline(recording_id=rid, batch_size=5) as second:
        for i in range(10):
            second.add_record({"loss": float(i)})
    use(backend, monkeypatch)
    assert main(["sync", rid]) == 1
    assert "1 batches refused by the backend are set aside" in capsys.readouterr().out
    assert steps(backend, rid, "loss") == list(range(20))
    (aside,) = runs.set_aside(Spool(first.run_dir), backend.url)
    assert aside.status == 400 and "many" in aside.reason
    assert main(["runs"]) == 0
    assert "+1-refused" in capsys.readouterr().out
    assert main(["show", rid]) == 0
    shown = capsys.readouterr().out
    assert f"metrics.jsonl line {aside.line}: HTTP 400" in shown
    assert main(["sync", rid]) == 1  # a second sync sends nothing twice
    assert steps(backend, rid, "loss") == list(range(20))


@pytest.mark.slow
def test_a_set_aside_line_is_resent_once_the_backend_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point larger than the backend's body limit is set aside (413); after the limit is
    raised, `mkv sync --resend-set-aside` stores it, once."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
    rid = recorder.recording_id
    with (recorder.run_dir / "metrics.jsonl").open("ab") as spool:
        spool.write(big_point_line(rid, 7, 200_000))
    server = Backend(tmp_path / "b", extra_args=["--max-body-bytes", "100000"])
    try:
        use(server, monkeypatch)
        assert main(["sync", rid]) == 1
        (aside,) = runs.set_aside(Spool(recorder.run_dir), server.url)
        assert aside.status == 413
        assert steps(server, rid, "loss") == [0]
        server.extra_args = []  # the operator raises the limit: same URL, same database
        server.restart()
        assert main(["sync", rid, "--resend-set-aside"]) == 0
        assert steps(server, rid, "loss") == [0, 7]
        assert runs.set_aside(Spool(recorder.run_dir), server.url) == []
        assert main(["sync", rid, "--resend-set-aside"]) == 0
        assert steps(server, rid, "loss") == [0, 7]
    finally:
        server.stop()


# -- wide batches ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_wide_logger_is_delivered_whole(backend: Backend) -> None:
    """1000 steps x 300 keys (a per-layer gradient-norm logger): every line is under the byte
    bound, so all 300,000 points arrive (one 35 MB line was refused with 413 before)."""
    keys = [f"grad_norm/layer{i:03d}" for i in range(300)]
    recorder = online_recorder(backend.url, backend.token, batch_size=1000, sync_data_timeout=60)
    with recorder:
        for step in range(1000):
            recorder.add_record(dict.fromkeys(keys, step / 1000))
    rid = recorder.recording_id
    sizes = [len(line) for line in (recorder.run_dir / "metrics.jsonl").read_bytes().split(b"\n")]
    assert max(sizes) <= recorder.config["max_batch_bytes"]
    for key in (keys[0], keys[150], keys[-1]):
        assert steps(backend, rid, key) == list(range(1000))
    assert runs.unsent_lines(Spool(recorder.run_dir), backend.url) == 0


@pytest.mark.slow
def test_a_line_over_the_backends_limit_is_sent_in_parts(tmp_path: Path) -> None:
    """A backend whose limit (1 MB) is under the recorder's batch bound: the sender learns the
    limit and sends each line in parts; every point arrives once."""
    server = Backend(tmp_path / "b", extra_args=["--max-body-bytes", "1000000"])
    try:
        keys = [f"k{i:03d}" for i in range(100)]
        recorder = online_recorder(server.url, server.token, batch_size=1000)
        with recorder:
            for _ in range(500):
                recorder.add_record(dict.fromkeys(keys, 0.5))
        biggest = max(len(x) for x in (recorder.run_dir / "metrics.jsonl").read_bytes().split())
        assert biggest > 1_000_000  # the lines themselves are over the backend's limit
        for key in (keys[0], keys[-1]):
            assert steps(server, recorder.recording_id, key) == list(range(500))
    finally:
        server.stop()


# -- writers -----------------------------------------------------------------------------------


def test_a_second_machine_adding_to_a_recording_loses_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    """recording_id= from a fresh MARKOV_DIR: its lines have keys of their own; 10 of 10."""
    first = online_recorder(backend.url, backend.token, markov_dir=str(tmp_path / "one"))
    with first:
        for i in range(5):
            first.add_record({"loss": float(i)})
    second = online_recorder(
        backend.url, backend.token, markov_dir=str(tmp_path / "two"),
        recording_id=first.recording_id,
    )  # fmt: skip
    with second:
        for i in range(5, 10):
            second.add_record({"loss": float(i)}, step=i)
    assert steps(backend, first.recording_id, "loss") == list(range(10))


@pytest.mark.slow
def test_resuming_after_kill9_continues_after_the_last_step_on_disk(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 mid-loop, then recording_id= in the same dir: new steps follow the last one on
    disk (no collision), and `mkv runs` counts every point."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "timed", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        rid = proc.stdout.readline().split()[1]
        for _ in range(20):
            proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    run = isolated / rid
    before = [p.step for p in runs.points(Spool(run), "acc")]
    with offline(recording_id=rid) as resumed:
        for _ in range(100):
            resumed.add_record({"loss": 1.0, "acc": -1})
    after = [p.step for p in runs.points(Spool(run), "acc")]
    assert after == before + list(range(len(before), len(before) + 100))
    assert len(set(after)) == len(after)
    assert main(["runs"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(rid))
    assert str(2 * len(after)) in row.split()


def test_sync_to_a_second_backend_sends_everything_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv sync RUN --endpoint Y` after syncing to X: Y gets every point (acks per backend)."""
    with offline(batch_size=10) as recorder:
        for i in range(50):
            recorder.add_record({"loss": float(i)})
    rid = recorder.recording_id
    x, y = Backend(tmp_path / "x"), Backend(tmp_path / "y")
    try:
        monkeypatch.setenv("MARKOV_API_KEY", x.token)
        assert main(["sync", rid, "--endpoint", x.url]) == 0
        assert main(["sync", rid, "--endpoint", y.url]) == 0
        out = capsys.readouterr().out
        assert "(0 batches sent" not in out
        assert steps(x, rid, "loss") == steps(y, rid, "loss") == list(range(50))
    finally:
        x.stop()
        y.stop()


# -- a peer that trickles ------------------------------------------------------------------------


@pytest.fixture
def trickler() -> Iterator[str]:
    """A peer that accepts and answers one byte every 0.3 s, forever (a dying proxy, an attack)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 100:
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


LOADED = 8.0  # seconds a loaded 2-core machine may add to a bound (scheduling, not waiting)


@pytest.mark.slow
def test_register_is_bounded_by_register_batch_timeout_against_a_trickling_peer(
    trickler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """register() returns within register_batch_timeout (it waited 99 s with a 3 s timeout);
    stop() within sync_data_timeout; after stop() no sender thread is left."""
    recorder = online_recorder(trickler, "t", register_batch_timeout=1.0, sync_data_timeout=2.0)
    # The bounds are the promise, with room for a loaded machine (LOADED): unbounded, these
    # calls wait for the trickle (99 s).
    began = time.monotonic()
    recorder.register()
    assert time.monotonic() - began < 1.0 + LOADED
    recorder.start()
    recorder.add_record({"loss": 1.0})
    began = time.monotonic()
    recorder.stop()
    assert time.monotonic() - began < 2.0 + LOADED
    assert not [t for t in threading.enumerate() if t.name == "markov-sender"]
    assert any("mkv sync" in r.getMessage() for r in caplog.records)


# -- credentials in the URL ------------------------------------------------------------------------


def test_credentials_in_the_endpoint_url_reach_no_file_and_no_message(
    backend: Backend, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """http://user:pw@host works, and 'pw' is nowhere in the run dir, the logs or `mkv show`."""
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-in-url"
    url = backend.url.replace("http://", f"http://someone:{secret}@")
    recorder = online_recorder(url, backend.token)
    with recorder:
        recorder.add_record({"loss": 1.0})
    assert steps(backend, recorder.recording_id, "loss") == [0]
    for path in recorder.run_dir.iterdir():
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in caplog.text
    assert secret not in repr(recorder.config)
    assert main(["show", recorder.recording_id]) == 0
    assert secret not in capsys.readouterr().out


def test_every_run_dir_file_is_one_of_the_documented_ones(backend: Backend) -> None:
    """The run dir holds the documented files only (writer-id included), nothing stray."""
    recorder = online_recorder(backend.url, backend.token)
    with recorder:
        recorder.add_record({"loss": 1.0})
    names = Counter(p.name for p in recorder.run_dir.iterdir())
    assert set(names) <= {
        "recording.json", "metrics.jsonl", "traces.jsonl", "logs.jsonl", "acks.json",
        "writer-id", "requirements.txt", "environment.json",
    }  # fmt: skip
    assert os.path.getsize(recorder.run_dir / "writer-id") == 17


# -- two lines in flight ---------------------------------------------------------------------------


@pytest.mark.parametrize("fates", [["503", "503"], ["lost"], ["reset"], ["late"]])
def test_with_two_lines_in_flight_acks_never_pass_a_line_that_failed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, fates: list[str]
) -> None:
    """Line 1 fails (or answers after line 2) while line 2 is stored: line 1 is sent again,
    the acks end over every line, and each point is stored once."""
    with offline(batch_size=10) as recorder:
        for i in range(60):
            recorder.add_record({"loss": float(i)})
    rid = recorder.recording_id
    with FlakyProxy(backend.url, scripted={":metrics:1": fates}, stall=0.5) as proxy:
        monkeypatch.setenv("MARKOV_ENDPOINT", proxy.url)
        monkeypatch.setenv("MARKOV_API_KEY", backend.token)
        assert main(["sync", rid]) == 0
        assert sum(proxy.counts[f] for f in set(fates)) == len(fates)
        assert runs.unsent_lines(Spool(recorder.run_dir), proxy.url) == 0
    assert steps(backend, rid, "loss") == list(range(60))


# -- the run dir refuses the acks ------------------------------------------------------------------


def test_acks_that_cannot_be_written_never_stop_the_sending(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """acks.json cannot be replaced (a directory stands in its way): every point still reaches
    the backend, the trouble is said once, and a later `mkv sync` replays without doubling."""
    n = 500
    recorder = online_recorder(backend.url, backend.token, batch_size=50)
    recorder.register()
    (recorder.run_dir / "acks.json").mkdir()
    with recorder:
        for i in range(n):
            recorder.add_record({"loss": float(i)})
    rid = recorder.recording_id
    assert steps(backend, rid, "loss") == list(range(n))
    said = [r.getMessage() for r in caplog.records if "acks.json" in r.getMessage()]
    assert len(said) == 1, said
    (recorder.run_dir / "acks.json").rmdir()
    use(backend, monkeypatch)
    assert main(["sync", rid]) == 0
    assert steps(backend, rid, "loss") == list(range(n))
