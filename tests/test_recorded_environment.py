"""A run's environment: start() captures it, the run dir and backend keep it, mkv env reads it."""

from __future__ import annotations

import importlib.metadata
import json
import socket
import time
from pathlib import Path

import pytest
import requests

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_start_captures_the_environment_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With capture on (the default), start() writes environment.json and requirements.txt."""
    monkeypatch.setenv("MARKOV_CAPTURE_ENVIRONMENT", "1")
    recorder = ExperimentRecorder("env", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record({"loss": 1.0})
        _wait_for(recorder.run_dir / "requirements.txt")
    env = json.loads((recorder.run_dir / "environment.json").read_text())
    names = {p["name"].lower() for p in env["packages"]}
    assert "opentelemetry-sdk" in names
    requirements = (recorder.run_dir / "requirements.txt").read_text()
    assert f"requests=={importlib.metadata.version('requests')}" in requirements


def test_capture_off_writes_no_environment() -> None:
    """MARKOV_CAPTURE_ENVIRONMENT=0 (the test default) leaves the run without environment.json."""
    recorder = ExperimentRecorder("no-env", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record({"loss": 1.0})
    assert not (recorder.run_dir / "environment.json").exists()


def test_requirements_file_method_and_mkv_env_agree(tmp_path: Path) -> None:
    """create_experiment_requirements_file and `mkv env requirements` write the same packages."""
    recorder = ExperimentRecorder("reqs", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record({"loss": 1.0})
        recorder.upsert_package_requirements()
    recorder.create_experiment_requirements_file(str(tmp_path / "out" / "a"))
    assert main(["env", "requirements", recorder.recording_id, str(tmp_path / "b.txt")]) == 0
    method = (tmp_path / "out" / "a" / "requirements.txt").read_text().splitlines()
    cli = (tmp_path / "b.txt").read_text().splitlines()
    pins = [line for line in method if "==" in line]
    assert pins and pins == [line for line in cli if "==" in line]


def test_online_environment_reaches_the_backend_and_mkv_env_reads_it_back(
    backend: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONLINE, upsert_package_requirements PATCHes the backend; mkv env reads it with no run dir."""
    recorder = ExperimentRecorder(
        "reqs-online",
        recording_mode=RecordingMode.ONLINE,
        endpoint=backend.url,  # type: ignore[attr-defined]
        api_key=backend.token,  # type: ignore[attr-defined]
    )
    with recorder:
        recorder.add_record({"loss": 1.0})
        recorder.upsert_package_requirements()
    stored = requests.get(
        f"{backend.url}/api/v1/recordings/{recorder.recording_id}/requirements",  # type: ignore[attr-defined]
        headers=backend.headers,
        timeout=10,  # type: ignore[attr-defined]
    ).json()
    local = json.loads((recorder.run_dir / "environment.json").read_text())
    assert stored["packages"] == local["packages"]
    monkeypatch.setenv("MARKOV_DIR", str(tmp_path / "elsewhere"))  # no local copy to read
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)  # type: ignore[attr-defined]
    target = tmp_path / "from-backend.txt"
    assert main(["env", "requirements", recorder.recording_id, str(target)]) == 0
    assert f"requests=={importlib.metadata.version('requests')}" in target.read_text()


def test_mkv_env_for_an_unknown_run_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No local run and no backend: exit 1 with one line naming the run."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MARKOV_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert main(["env", "requirements", "deadbeef", "x.txt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deadbeef" in err[0]
