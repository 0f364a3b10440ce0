"""The first ten minutes: what a script prints and how long it waits with nothing configured, or
with a configured backend that is down (issue 11, "Defaults")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from backend_fixture import Backend, dead_endpoint, online_recorder
from flaky_proxy import FlakyProxy

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.config import DEFAULT_ENDPOINT
from markov_otel.shipping.runs import unsent_lines
from markov_otel.shipping.sender import GIVE_UP_UNREACHABLE
from markov_otel.shipping.spool import Spool

# The seed's docstring example, 100 points, twice in one process (a tiny sweep).
SEED = textwrap.dedent(
    """
    from markov_otel import ExperimentRecorder
    for run in range(2):
        recorder = ExperimentRecorder(name="my_experiment_recorder")
        recorder.register()
        with recorder:
            for i in range(100):
                recorder.add_record({"loss": 1.0 / (i + 1)})
            recorder.summary.add_training_loss("0.23")
        print(recorder.recording_id)
    """
)
# A run that waits out the default sync_data_timeout takes 30 s; a run's real second may take
# several on a loaded machine (a fresh interpreter importing the SDK twice). Below 30 is the
# promise: neither of the two runs waited out the timeout.
GENEROUS = 29.0


def run_seed(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The seed example in a fresh interpreter, in tmp_path, with only `env` configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKOV_")}
    clean |= {"MARKOV_CONFIG": str(tmp_path / "no-config.json"), **env}
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SEED],
        env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, time.monotonic() - began


def run_info(tmp_path: Path, run_id: str) -> dict[str, Any]:
    return json.loads((tmp_path / "markov-runs" / run_id / "recording.json").read_text())


def test_nothing_configured_records_locally_and_says_so_once(tmp_path: Path) -> None:
    """No endpoint, no mode anywhere: both runs are OFFLINE, one stderr line says how to go
    online and sync, and the script does not wait for a backend."""
    result, elapsed = run_seed(tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"mkv sync {first}" in lines[0]
    assert "mkv config set endpoint" in lines[0] and "mkv serve" in lines[0]
    for run_id in (first, second):
        info = run_info(tmp_path, run_id)
        assert (info["mode"], info["status"], info["points"]) == ("offline", "finished", 100)
    assert elapsed < GENEROUS


@pytest.mark.slow
def test_configured_dead_endpoint_stop_gives_up_at_once(tmp_path: Path) -> None:
    """An endpoint that refuses connections: stop() does not wait out sync_data_timeout (30 s);
    each run says one line naming its `mkv sync`, and every point is on disk."""
    result, elapsed = run_seed(tmp_path, MARKOV_ENDPOINT=dead_endpoint())
    assert result.returncode == 0, result.stderr
    run_ids = result.stdout.split()
    lines = result.stderr.splitlines()
    assert len(lines) <= 2 * len(run_ids), result.stderr  # at most: cannot register, not sent
    for run_id in run_ids:
        naming = [line for line in lines if f"mkv sync {run_id}" in line]
        assert len(naming) == 1, result.stderr
        assert "cannot connect" in naming[0]
        info = run_info(tmp_path, run_id)
        assert (info["mode"], info["points"]) == ("online", 100)
    assert elapsed < GENEROUS


@pytest.mark.slow
def test_a_backend_answering_503_still_gets_the_whole_timeout(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """503s during stop() are waited out (unlike refused connections): once the backend takes
    batches again, within sync_data_timeout, everything arrives and no `mkv sync` is asked."""
    with FlakyProxy(backend.url, faults={"503": 1.0}) as proxy:
        recorder = online_recorder(proxy.url, backend.token, sync_data_timeout=60.0)
        with recorder:
            for i in range(100):
                recorder.add_record({"loss": 1.0 / (i + 1)})

            def heal() -> None:  # after more 503s than refused connections would be allowed
                while proxy.counts["503"] < GIVE_UP_UNREACHABLE + 2:
                    time.sleep(0.02)
                proxy.faults = {}

            healer = threading.Thread(target=heal, daemon=True)
            healer.start()
        healer.join(5)
    assert proxy.counts["forward"] > 0
    assert unsent_lines(Spool(recorder.run_dir)) == 0
    assert [r["step"] for r in backend.records(recorder.recording_id, "loss")] == list(range(100))
    assert not any("mkv sync" in r.getMessage() for r in caplog.records)


def test_explicit_online_with_nothing_configured_uses_the_default_endpoint() -> None:
    """recording_mode=ONLINE (or MARKOV_MODE=online, `mkv mode online`) is followed as given:
    with no endpoint configured it sends to the documented default."""
    explicit = ExperimentRecorder(name="x", recording_mode=RecordingMode.ONLINE)
    assert explicit.config["recording_mode"] is RecordingMode.ONLINE
    assert explicit.config["endpoint"] == DEFAULT_ENDPOINT
    assert main(["mode", "online"]) == 0
    from_file = ExperimentRecorder(name="x")
    assert from_file.config["recording_mode"] is RecordingMode.ONLINE
    assert from_file.config["endpoint"] == DEFAULT_ENDPOINT


def mkv(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `mkv` console script, with the test's settings and `env`."""
    script = Path(sys.executable).with_name("mkv")
    return subprocess.run(
        [str(script), *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def local_run() -> ExperimentRecorder:
    recorder = ExperimentRecorder(name="local", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record({"loss": 1.0})
    return recorder


def test_sync_to_a_dead_endpoint_fails_at_once_in_one_line() -> None:
    """`mkv sync RUN` with nobody listening exits 1 with one line (start the backend, then
    `mkv sync RUN`) instead of retrying forever."""
    recorder = local_run()
    result = mkv(["sync", recorder.recording_id], MARKOV_ENDPOINT=dead_endpoint())
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mkv: cannot connect"), result.stderr
    assert f"mkv sync {recorder.recording_id}" in result.stderr


def test_sync_with_a_wrong_token_says_401_once(backend: Backend) -> None:
    """A 401 during `mkv sync` is one line on stderr naming the fix (before: a logged error,
    then the same error again)."""
    recorder = local_run()
    result = mkv(
        ["sync", recorder.recording_id], MARKOV_ENDPOINT=backend.url, MARKOV_API_KEY="wrong"
    )
    assert result.returncode == 1
    # "HTTP 401", not "401": the port (40185) or the recording id may hold those digits too
    assert result.stderr.count("HTTP 401") == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "api_key" in result.stderr
    assert f"mkv sync {recorder.recording_id}" in result.stderr
