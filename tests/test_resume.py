"""Resuming a recording (`recording_id=`): it keeps its first start time, locally and on the
backend, and its steps go on after the last one, also from another machine's fresh run dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from backend_fixture import Backend, online_recorder

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.otel.resource import iso_time


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("resumed", recording_mode=RecordingMode.OFFLINE, **kwargs)


def recording_json(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "recording.json").read_text()))


def backend_recording(backend: Backend, rid: str) -> dict[str, Any]:
    answer = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    )
    answer.raise_for_status()
    return dict(answer.json())


def test_a_resumed_recording_keeps_its_first_start_time_on_disk(isolated: Path) -> None:
    """recording.json after a resume: started_at of the first piece, ended_at of the last."""
    with offline() as first:
        first.add_record({"loss": 1.0})
    before = recording_json(first.run_dir)
    with offline(recording_id=first.recording_id) as second:
        second.add_record({"loss": 0.5})
    after = recording_json(second.run_dir)
    assert after["started_at"] == before["started_at"]
    assert after["ended_at"] >= before["ended_at"] > before["started_at"]


def test_a_resumed_recording_keeps_its_first_start_time_on_the_backend(
    isolated: Path, backend: Backend
) -> None:
    """Online, resumed in the same run dir: the backend's started_at stays the first piece's."""
    with online_recorder(backend.url, backend.token) as first:
        first.add_record({"loss": 1.0})
    started = backend_recording(backend, first.recording_id)["started_at"]
    assert started == iso_time(recording_json(first.run_dir)["started_at"])
    with online_recorder(backend.url, backend.token, recording_id=first.recording_id) as second:
        second.add_record({"loss": 0.5})
    stored = backend_recording(backend, first.recording_id)
    assert stored["started_at"] == started
    assert stored["ended_at"] == iso_time(recording_json(second.run_dir)["ended_at"])


def test_resuming_on_another_machine_continues_the_backends_steps_and_start(
    isolated: Path, backend: Backend, tmp_path: Path
) -> None:
    """A fresh run dir (another machine) with the same recording_id, online: the steps go on
    after the backend's last step, each step stored once, and the start time stays the first."""
    with online_recorder(backend.url, backend.token, markov_dir=str(tmp_path / "a")) as first:
        for loss in range(5):
            first.add_record({"loss": float(loss)})
    rid = first.recording_id
    started = backend_recording(backend, rid)["started_at"]
    elsewhere = str(tmp_path / "b")
    with online_recorder(backend.url, backend.token, markov_dir=elsewhere, recording_id=rid) as b:
        for loss in range(5, 8):
            b.add_record({"loss": float(loss)})
    stored = backend.records(rid, "loss")
    assert [p["step"] for p in stored] == list(range(8))
    assert [p["value"] for p in stored] == [float(v) for v in range(8)]
    recording = backend_recording(backend, rid)
    assert recording["started_at"] == started
    assert recording["last_step"] == 7
