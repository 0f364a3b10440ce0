"""Processes that end without stop(): exit flushes everything, SIGKILL loses nothing spooled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from otlp_files import last_resource, points, recording

from markov_otel.cli.main import main


def python(script: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **kwargs,  # type: ignore[call-overload]
    )


def test_exit_without_stop_keeps_every_record(isolated: Path) -> None:
    """A script that records and simply ends has all records on disk, status finished."""
    proc = python(
        """
        from markov_otel import ExperimentRecorder, RecordingMode
        recorder = ExperimentRecorder(
            name="no-stop", recording_mode=RecordingMode.OFFLINE, batch_processing_interval=3600
        )
        recorder.start()
        for i in range(1000):
            recorder.add_record({"loss": 1.0 / (i + 1), "step_id": i})
        recorder.summary.add_training_loss(0.001)
        print(recorder.recording_id, flush=True)
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    run = isolated / out.strip()
    got = points(run)
    assert len(got) == 2000
    assert sorted(p.value for p in got if p.key == "step_id") == list(range(1000))
    assert recording(run)["status"] == "finished"
    assert last_resource(run)["markov.status"] == "finished"
    assert last_resource(run)["markov.summary.training_loss"] == 0.001


def test_uncaught_exception_without_stop_is_failed(isolated: Path) -> None:
    """A script that dies of an uncaught exception keeps its records and is marked failed."""
    proc = python(
        """
        from markov_otel import ExperimentRecorder, RecordingMode
        recorder = ExperimentRecorder(name="boom", recording_mode=RecordingMode.OFFLINE)
        recorder.start()
        for i in range(100):
            recorder.add_record({"loss": float(i)})
        print(recorder.recording_id, flush=True)
        raise RuntimeError("training blew up")
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "training blew up" in err
    run = isolated / out.strip()
    assert [p.value for p in points(run)] == [float(i) for i in range(100)]
    assert recording(run)["status"] == "failed"
    assert last_resource(run)["markov.status"] == "failed"


def test_exit_without_stop_with_several_recorders(isolated: Path) -> None:
    """Every recorder still running at exit is flushed, not just the last one."""
    proc = python(
        """
        from markov_otel import ExperimentRecorder, RecordingMode
        recorders = [
            ExperimentRecorder(name=f"r{i}", recording_mode=RecordingMode.OFFLINE)
            for i in range(3)
        ]
        for r in recorders:
            r.start()
            for i in range(10):
                r.add_record({"x": i})
            print(r.recording_id, flush=True)
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for run_id in out.split():
        run = isolated / run_id
        assert [p.value for p in points(run)] == list(range(10))
        assert recording(run)["status"] == "finished"


def test_sigkill_keeps_what_was_flushed(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL once the records are on disk (the child reads them back): they stay, and the
    run shows crashed."""
    proc = python(
        """
        import time
        from markov_otel import ExperimentRecorder, RecordingMode
        from markov_otel.shipping.spool import Spool
        recorder = ExperimentRecorder(
            name="killed", recording_mode=RecordingMode.OFFLINE, batch_processing_interval=0.05
        )
        recorder.start()
        for i in range(500):
            recorder.add_record({"loss": float(i), "acc": i})
        while Spool(recorder.run_dir).points_on_disk()[0] < 1000:
            time.sleep(0.05)  # the flusher writes every 0.05 s; the test's timeout bounds this
        print(recorder.recording_id, flush=True)
        time.sleep(600)
        """
    )
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run = isolated / run_id
    got = points(run)
    assert len(got) == 1000
    assert sorted(p.value for p in got if p.key == "acc") == list(range(500))
    assert recording(run)["status"] == "running"  # what the dead process last wrote

    assert main(["runs"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if run_id in line]
    assert (row[1], row[2], row[6]) == ("killed", "crashed", "1000")
    assert main(["show", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["points"]) == ("crashed", 1000)


def test_sigkill_mid_write_leaves_readable_files(isolated: Path) -> None:
    """A run killed while the flusher is busy leaves only whole lines that parse, none torn."""
    proc = python(
        """
        from markov_otel import ExperimentRecorder, RecordingMode
        recorder = ExperimentRecorder(
            name="busy", recording_mode=RecordingMode.OFFLINE, batch_size=20,
            batch_processing_interval=0.01,
        )
        recorder.start()
        print(recorder.recording_id, flush=True)
        i = 0
        while True:
            recorder.add_record({"v": i})
            i += 1
        """
    )
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        metrics = isolated / run_id / "metrics.jsonl"
        deadline = time.monotonic() + 60
        while not metrics.exists() or metrics.stat().st_size < 200_000:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    values = [p.value for p in points(isolated / run_id)]  # every complete line parses
    assert len(values) > 0
    assert values == list(range(len(values)))  # a prefix: nothing lost before the cut
