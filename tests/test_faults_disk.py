"""Disk faults (issue 6): a read-only run dir, a full disk mid-run, a torn last line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.errors import ConfigError
from markov_otel.shipping.runs import points
from markov_otel.shipping.spool import Spool

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def mount(target: Path, options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards whatever happened."""
    target = tmp_path / "small"
    target.mkdir()
    mount(target, "size=256k")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only mount: unwritable even for root."""
    target = tmp_path / "ro"
    target.mkdir()
    mount(target, "ro,size=64k")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("disk", recording_mode=RecordingMode.OFFLINE, **kwargs)


def disk_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "markov_otel" and r.levelno >= logging.ERROR
    ]


@needs_root
@pytest.mark.parametrize("call", ["start", "register"])
def test_read_only_run_dir_is_refused_at_start(
    read_only_dir: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """MARKOV_DIR on a read-only mount: ConfigError at start()/register() naming dir and fix."""
    monkeypatch.setenv("MARKOV_DIR", str(read_only_dir))
    recorder = offline()
    with pytest.raises(ConfigError) as caught:
        getattr(recorder, call)()
    message = str(caught.value)
    assert str(read_only_dir / recorder.recording_id) in message
    assert "MARKOV_DIR" in message
    assert os.listdir(read_only_dir) == []


@needs_root
def test_disk_full_mid_run_says_so_once_and_writes_everything_after_space_returns(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """256 KiB fills up: add_record never raises, one error; after a remount every record once."""
    monkeypatch.setenv("MARKOV_DIR", str(small_disk))
    n = 10_000  # ~2.4 MB of OTLP-JSON: ten times the disk
    recorder = offline(batch_size=200, batch_processing_interval=0.05, sync_data_timeout=10.0)
    recorder.start()
    metrics = recorder.run_dir / "metrics.jsonl"
    for i in range(n // 2):
        recorder.add_record({"loss": float(i), "acc": i})
    deadline = time.monotonic() + 20
    while not disk_errors(caplog):  # wait for the flusher to meet the full disk
        assert time.monotonic() < deadline, "the disk never filled"
        time.sleep(0.05)
    for i in range(n // 2, n):  # the disk is full: recording goes on, nothing raises
        recorder.add_record({"loss": float(i), "acc": i})
    on_full_disk = sum(1 for _ in points(Spool(recorder.run_dir)))
    assert 0 < on_full_disk < 2 * n
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    recorder.stop()
    errors = disk_errors(caplog)
    assert len(errors) == 1, errors
    assert "cannot write to the run dir" in errors[0]
    text = metrics.read_text(encoding="utf-8")
    assert text.endswith("\n")
    for line in text.split("\n")[:-1]:
        json.loads(line)  # every failed append was cut back: no torn line inside the file
    got = list(points(Spool(recorder.run_dir)))
    for key in ("loss", "acc"):
        assert [p.step for p in got if p.key == key] == list(range(n)), key
    assert json.loads((recorder.run_dir / "recording.json").read_text())["status"] == "finished"


def fill(disk: Path) -> None:
    """Take every free block of the filesystem."""
    with open(disk / "filler", "wb", buffering=0) as out:
        try:
            while out.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass


@needs_root
@pytest.mark.slow
def test_disk_full_for_seconds_is_said_once_and_stop_still_returns(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No byte free through two recording.json saves: one message each, stop() returns in time."""
    monkeypatch.setenv("MARKOV_DIR", str(small_disk))
    timeout = 2.0
    recorder = offline(batch_size=100, batch_processing_interval=0.05, sync_data_timeout=timeout)
    recorder.start()
    fill(small_disk)
    for i in range(1000):
        recorder.add_record({"loss": float(i)})
    time.sleep(4.5)  # recording.json is saved every 2 s: two failed saves
    for i in range(1000, 1100):
        recorder.add_record({"loss": float(i)})
    began = time.monotonic()
    recorder.stop()
    # The spec's bound is timeout + 0.5 s; 5 s of room for a loaded machine: a stop() that
    # ignored its deadline would wait for the disk until the test's own timeout.
    assert time.monotonic() - began <= timeout + 5.0
    said = [r.getMessage() for r in caplog.records if r.name == "markov_otel"]
    assert sum("cannot write to the run dir" in m for m in said) == 1, said
    assert sum("recording.json" in m for m in said) == 1, said
    assert sum("1100 points" in m and "could not be written" in m for m in said) == 1, said


@pytest.mark.parametrize("torn_bytes", [150, 200_000])
def test_torn_last_line_is_ignored_on_read_and_cut_on_resume(
    isolated: Path, torn_bytes: int
) -> None:
    """Half a line appended after a crash: reads skip it, a resumed run cuts it, counts add up;
    also when the torn line is longer than the 64 KiB the repair reads at a time."""
    first = offline()
    with first:
        for i in range(300):
            first.add_record({"loss": float(i)})
    metrics = first.run_dir / "metrics.jsonl"
    whole = metrics.read_bytes()
    head = whole.splitlines()[0]  # a real batch, repeated as a crashed writer could leave it
    torn = (head * (torn_bytes // len(head) + 1))[:torn_bytes]  # and no newline
    metrics.write_bytes(whole + torn)
    assert [p.step for p in points(Spool(first.run_dir))] == list(range(300))

    second = ExperimentRecorder(
        "disk", recording_mode=RecordingMode.OFFLINE, recording_id=first.recording_id
    )
    with second:
        for _ in range(200):
            second.add_record({"loss": 1.0})
    text = metrics.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    for line in lines:
        json.loads(line)  # every line parses: the torn head is gone
    assert text.startswith(whole.decode())
    assert [p.step for p in points(Spool(first.run_dir))] == list(range(500))
