"""Process faults (issue 6): kill -9 mid-loop, fork after start(), spawn workers, threads."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import child_process
import pytest
import requests

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.errors import RecorderStateError
from markov_otel.shipping.runs import points
from markov_otel.shipping.spool import Spool

KEYS = ("loss", "acc")
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("proc", recording_mode=RecordingMode.OFFLINE, **kwargs)


def steps_by_key(run_dir: Path) -> dict[str, list[int]]:
    """Steps per key in file order, read back the way `mkv` reads a run."""
    out: dict[str, list[int]] = {}
    for point in points(Spool(run_dir)):
        out.setdefault(point.key, []).append(point.step)
    return out


@pytest.mark.slow
def test_kill9_keeps_every_flushed_record_and_syncs_it_once(
    isolated: Path,
    backend: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGKILL at a seeded random moment past 50k records (50 batches, the encoder process at
    work): gapless prefix, crashed, synced once."""
    checkpoint = 50_000
    proc = child_process.start("kill9", checkpoint)
    try:
        run_id = child_process.said_next(proc, "id")
        assert int(child_process.said_next(proc, "checkpoint")) == checkpoint
        child_process.said_next(proc, "progress")  # past the checkpoint: recording again
        time.sleep(random.Random(6).uniform(0.0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    steps = steps_by_key(isolated / run_id)
    assert set(steps) == set(KEYS)
    spooled = len(steps["acc"])
    assert spooled >= checkpoint  # every record on disk before the checkpoint stays there
    for key in KEYS:
        assert steps[key] == list(range(spooled)), key  # no gap, no duplicate, in order

    assert main(["runs"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if run_id in line]
    assert (row[2], row[6]) == ("crashed", str(2 * spooled))

    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    assert main(["sync", run_id]) == 0
    for key in KEYS:
        assert [r["step"] for r in backend.records(run_id, key)] == list(range(spooled))
    answer = requests.get(
        f"{backend.url}/api/v1/recordings/{run_id}", headers=backend.headers, timeout=10
    )
    assert answer.json()["status"] == "crashed"
    assert answer.json()["points"] == 2 * spooled


def _forked_child(recorder: ExperimentRecorder, out: Any) -> None:
    """In the forked child: try to record and to stop, report what happened."""
    try:
        recorder.add_record({"loss": -1.0, "acc": -1})
    except RecorderStateError as exc:
        out.put(("refused", os.getpid(), str(exc)))
    else:
        out.put(("accepted", os.getpid(), ""))
    recorder.stop()  # must not write the parent's buffer a second time


@pytest.mark.filterwarnings(FORK_WARNING)
def test_fork_after_start_refuses_child_records_and_keeps_parent_buffer_once() -> None:
    """Forked workers get a clear RecorderStateError; the parent's buffered records land once."""
    recorder = offline(batch_size=100_000, batch_processing_interval=3600)
    recorder.start()
    for i in range(1000):  # stays in the buffer: no batch is full, no interval passes
        recorder.add_record({"loss": float(i), "acc": i})
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_forked_child, args=(recorder, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    answers = sorted(out.get(timeout=10) for _ in workers)
    assert [a[0] for a in answers] == ["refused", "refused"]
    assert {a[1] for a in answers} == {w.pid for w in workers}
    for _, _, message in answers:
        assert f"forked from the recording process {os.getpid()}" in message
    for i in range(1000, 2000):
        recorder.add_record({"loss": float(i), "acc": i})
    recorder.stop()
    steps = steps_by_key(recorder.run_dir)
    assert steps == {key: list(range(2000)) for key in KEYS}


def spawned_worker(index: int) -> str:
    """A spawn worker: its own OFFLINE recorder, 1000 records, stopped; returns the run id."""
    recorder = offline(batch_processing_interval=0.05)
    with recorder:
        for i in range(1000):
            recorder.add_record({"loss": float(i), "acc": index})
    return recorder.recording_id


def test_spawn_workers_record_their_own_runs(isolated: Path) -> None:
    """Three spawn workers, each with its own recorder: three finished runs of 1000 records."""
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(3)
    try:
        run_ids = pool.map(spawned_worker, range(3))
    except BaseException:
        pool.terminate()
        raise
    # The workers end by themselves, as a training script's pool would: Pool.__exit__'s
    # terminate() (SIGTERM) once hung here under load, its cause not yet found (issue note).
    pool.close()
    pool.join()
    assert len(set(run_ids)) == 3
    for index, run_id in enumerate(run_ids):
        run = Spool(isolated / run_id)
        assert run.read_recording()["status"] == "finished"
        acc = [p for p in points(run) if p.key == "acc"]
        assert [p.step for p in acc] == list(range(1000))
        assert {p.value for p in acc} == {index}


def test_eight_threads_record_at_once_and_nothing_is_lost_or_doubled() -> None:
    """8 threads x 10k add_record calls on one recorder: 80k records, each stored exactly once."""
    threads_n, per_thread = 8, 10_000
    recorder = offline(batch_size=500, batch_processing_interval=0.05)
    recorder.start()
    go = threading.Barrier(threads_n)

    def work(t: int) -> None:
        go.wait()
        for i in range(per_thread):
            recorder.add_record({f"t{t}": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.stop()
    values: dict[str, list[float | int | str]] = {}
    for point in points(Spool(recorder.run_dir)):
        values.setdefault(point.key, []).append(point.value)
    assert sum(map(len, values.values())) == threads_n * per_thread
    for t in range(threads_n):
        assert values[f"t{t}"] == list(range(per_thread)), t  # each thread's order kept
