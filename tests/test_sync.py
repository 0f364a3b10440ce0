"""OFFLINE runs and `mkv sync`: exactly N per key on the backend, however often it is run."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flaky_proxy import FlakyProxy

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.shipping.runs import open_run, unsent_lines
from markov_otel.shipping.spool import Spool

N = 1000
KEYS = ("loss", "accuracy")


def record_offline(n: int = N, **kwargs: Any) -> ExperimentRecorder:
    """An OFFLINE run of n records x KEYS, stopped; small batches so a sync has many lines."""
    recorder = ExperimentRecorder(
        "offline-sync",
        recording_mode=RecordingMode.OFFLINE,
        hyper_parameters={"lr": 0.01},
        batch_size=50,
        batch_processing_interval=0.05,
        **kwargs,
    )
    with recorder:
        for i in range(n):
            recorder.add_record({"loss": 1.0 / (i + 1), "accuracy": i / n})
        recorder.summary.add_training_loss(1.0 / n)
    return recorder


def stored(backend: Any, recording_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{backend.url}/api/v1/recordings/{recording_id}", headers=backend.headers, timeout=10
    )
    answer.raise_for_status()
    return answer.json()


@pytest.fixture
def sync_env(backend: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """MARKOV_ENDPOINT / MARKOV_API_KEY point `mkv sync` at the backend."""
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    return backend


def test_offline_run_then_sync_stores_exactly_n(sync_env: Any) -> None:
    """An OFFLINE run reaches the backend only through `mkv sync`, then exactly N per key."""
    recorder = record_offline()
    listing = requests.get(
        f"{sync_env.url}/api/v1/recordings", headers=sync_env.headers, timeout=10
    ).json()
    assert recorder.recording_id not in [r["recording_id"] for r in listing]
    assert main(["sync", recorder.recording_id]) == 0
    for key in KEYS:
        assert [r["step"] for r in sync_env.records(recorder.recording_id, key)] == list(range(N))
    found = stored(sync_env, recorder.recording_id)
    assert found["points"] == N * len(KEYS)
    assert found["status"] == "finished"
    assert found["hyper_parameters"] == {"lr": 0.01}
    assert found["summary"] == recorder.summary.to_dict() != {}
    assert found["model_id"] == recorder.model_id


def test_sync_twice_stores_nothing_twice(
    sync_env: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second sync, even with the acks forgotten, resends lines the backend keeps once."""
    recorder = record_offline()
    assert main(["sync", recorder.recording_id]) == 0
    assert main(["sync", recorder.recording_id]) == 0
    assert "0 batches sent" in capsys.readouterr().out.splitlines()[-1]
    (recorder.run_dir / "acks.json").unlink()  # forget every ack: everything goes again
    assert main(["sync", recorder.recording_id]) == 0
    assert "0 batches sent" not in capsys.readouterr().out
    for key in KEYS:
        assert [r["step"] for r in sync_env.records(recorder.recording_id, key)] == list(range(N))
    assert stored(sync_env, recorder.recording_id)["points"] == N * len(KEYS)


def test_sync_all_uploads_every_local_run(
    sync_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv sync --all` sends each local run; each has exactly its own points."""
    runs = [record_offline(n) for n in (100, 250, 400)]
    assert main(["sync", "--all"]) == 0
    out = capsys.readouterr().out
    for recorder, n in zip(runs, (100, 250, 400), strict=True):
        assert f"{recorder.recording_id}: synced" in out
        assert [r["step"] for r in sync_env.records(recorder.recording_id, "loss")] == list(
            range(n)
        )
        assert stored(sync_env, recorder.recording_id)["points"] == n * len(KEYS)
    spools = [open_run(runs[0].run_dir.parent, r.recording_id) for r in runs]
    assert [unsent_lines(s) for s in spools] == [0, 0, 0]


@pytest.mark.slow
def test_interrupted_sync_resumes_where_it_stopped(
    sync_env: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sync whose link dies half-way fails clearly; the next one sends the rest, none twice."""
    recorder = record_offline()
    spool = Spool(recorder.run_dir)
    with FlakyProxy(sync_env.url, die_after=8) as proxy:
        total = unsent_lines(spool, proxy.url)
        monkeypatch.setenv("MARKOV_ENDPOINT", proxy.url)
        assert main(["sync", recorder.recording_id, "--timeout", "1.5"]) == 1
        assert "mkv sync again" in capsys.readouterr().err
        assert proxy.counts["reset"] > 0
        left = unsent_lines(spool, proxy.url)
        assert 0 < left < total
        sent_before = len(sync_env.records(recorder.recording_id, "loss"))
        assert 0 < sent_before < N
        proxy.die_after = None  # the link comes back
        assert main(["sync", recorder.recording_id]) == 0
        assert f"{left} were pending" in capsys.readouterr().out
    for key in KEYS:
        assert [r["step"] for r in sync_env.records(recorder.recording_id, key)] == list(range(N))
    assert stored(sync_env, recorder.recording_id)["points"] == N * len(KEYS)
