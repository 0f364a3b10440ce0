"""ONLINE mode end to end: a recorder ships every point to the real backend subprocess."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from markov_otel import (
    BinaryOperation,
    ExperimentAlertCondition,
    ExperimentRecorder,
    RecordingMode,
)

N = 1500
KEYS = ("loss", "accuracy", "lr")


def online(backend: Any, **kwargs: Any) -> ExperimentRecorder:
    """A recorder that ships to `backend`, flushing small batches often."""
    options: dict[str, Any] = {
        "recording_mode": RecordingMode.ONLINE,
        "endpoint": backend.url,
        "api_key": backend.token,
        "batch_size": 200,
        "batch_processing_interval": 0.05,
        "register_batch_timeout": 5.0,
        "sync_data_timeout": 20.0,
    }
    options.update(kwargs)
    return ExperimentRecorder("online-e2e", **options)


def get(backend: Any, path: str, **params: str) -> Any:
    answer = requests.get(backend.url + path, params=params, headers=backend.headers, timeout=10)
    answer.raise_for_status()
    return answer.json()


def test_every_point_reaches_the_backend_in_order_with_its_timestamp(backend: Any) -> None:
    """N records x 3 keys online: the read API returns exactly N per key, by step, stamped."""
    recorder = online(backend)
    brackets = []
    with recorder:
        for i in range(N):
            before = time.time_ns()
            recorder.add_record({"loss": 1.0 / (i + 1), "accuracy": i / N, "lr": 0.1})
            brackets.append((before, time.time_ns()))
    for key in KEYS:
        rows = backend.records(recorder.recording_id, key)
        assert [r["step"] for r in rows] == list(range(N))
        for row, (before, after) in zip(rows, brackets, strict=True):
            assert before <= row["time_unix_nano"] <= after
    assert [r["value"] for r in backend.records(recorder.recording_id, "loss")][:3] == [
        1.0,
        0.5,
        pytest.approx(1 / 3),
    ]
    stored = get(backend, f"/api/v1/recordings/{recorder.recording_id}")
    assert stored["points"] == N * len(KEYS)
    assert sorted(stored["keys"]) == sorted(KEYS)


def test_identity_comes_from_the_backend(backend: Any) -> None:
    """experiment_url, model_id and recording_id are the ones the backend holds."""
    recorder = online(backend)
    with recorder:
        recorder.add_record({"loss": 1.0})
        url = recorder.experiment_url
    stored = get(backend, f"/api/v1/recordings/{recorder.recording_id}")
    assert url == stored["experiment_url"]
    assert url.startswith(backend.url + "/")
    assert recorder.model_id == stored["model_id"]
    assert stored["recording_id"] == recorder.recording_id
    assert requests.get(url, headers=backend.headers, timeout=10).status_code == 200


def test_summary_hyperparameters_status_and_alerts_reach_the_backend(backend: Any) -> None:
    """Hyperparameters, summary, final status and each alert firing are on the backend."""
    recorder = online(backend, hyper_parameters={"lr": 0.01, "optimizer": "adam"})
    recorder.attach_alert_on(
        ExperimentAlertCondition("loss", BinaryOperation.LESS_THAN, 0.25), "loss is low"
    )
    with recorder:
        recorder.add_hyper_parameters({"epochs": 3})
        for loss in (0.9, 0.2, 0.1, 0.8, 0.15):  # two firings: steps 1 and 4
            recorder.add_record({"loss": loss})
        recorder.summary.add_training_loss(0.15)
        recorder.summary.add_number_of_epochs(3)
    stored = get(backend, f"/api/v1/recordings/{recorder.recording_id}")
    assert stored["hyper_parameters"] == {"lr": 0.01, "optimizer": "adam", "epochs": 3}
    assert stored["summary"] == recorder.summary.to_dict()
    assert stored["summary"]  # the comparison above is not between two empty dicts
    assert stored["status"] == "finished"
    alerts = get(backend, f"/api/v1/recordings/{recorder.recording_id}/alerts")
    assert [(a["step"], a["value"], a["text"]) for a in alerts] == [
        (1, 0.2, "loss is low"),
        (4, 0.15, "loss is low"),
    ]


def test_a_failed_run_is_marked_failed_on_the_backend(backend: Any) -> None:
    """An exception escaping `with` reaches the backend as status failed, with its points."""
    recorder = online(backend)
    with pytest.raises(ZeroDivisionError), recorder:
        recorder.add_record({"loss": 1.0})
        recorder.add_record({"loss": 1 / 0})
    stored = get(backend, f"/api/v1/recordings/{recorder.recording_id}")
    assert stored["status"] == "failed"
    assert len(backend.records(recorder.recording_id, "loss")) == 1


def test_non_finite_values_round_trip_through_the_backend(backend: Any) -> None:
    """NaN, +inf and -inf come back as the protocol's strings, next to ordinary numbers."""
    recorder = online(backend)
    values = [float("nan"), float("inf"), float("-inf"), 0.5, -0.0, 1e308, 7]
    with recorder:
        for value in values:
            recorder.add_record({"x": value})
    got = [r["value"] for r in backend.records(recorder.recording_id, "x")]
    assert got == ["NaN", "Infinity", "-Infinity", 0.5, 0.0, 1e308, 7]
    assert math.copysign(1.0, got[4]) == -1.0  # -0.0 keeps its sign through JSON and storage


def test_the_api_key_is_never_written_nor_logged(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No file of the run dir and no log line (DEBUG included) contains the API key."""
    caplog.set_level(logging.DEBUG)
    recorder = online(backend, hyper_parameters={"lr": 0.1})
    with recorder:
        for i in range(300):
            recorder.add_record({"loss": 1.0 / (i + 1)})
    assert len(backend.records(recorder.recording_id, "loss")) == 300
    secret = backend.token.encode()
    files = [p for p in Path(recorder.run_dir).rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"recording.json", "metrics.jsonl", "acks.json"}
    assert [p.name for p in files if secret in p.read_bytes()] == []
    assert caplog.records  # DEBUG logging did capture something (urllib3 at least)
    assert backend.token not in caplog.text
    assert backend.token not in repr(recorder)
    assert backend.token not in str(recorder.config)
