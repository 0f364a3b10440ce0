"""Shared fixtures: every test gets its own config file and runs dir, and the real backend."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis_examples import DEFAULT_MAX_EXAMPLES

pytest_plugins = ["backend_fixture", "leftovers"]

# No wall-clock limits on examples (Hypothesis's 200 ms deadline, its too_slow check): on a
# loaded machine they fail tests whose code is right. A test may still set its own settings.
# `--hypothesis-profile=deep` draws ten times the examples (hypothesis_examples.py).
settings.register_profile(
    "markov",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=DEFAULT_MAX_EXAMPLES,
)
settings.register_profile(
    "deep", settings.get_profile("markov"), max_examples=10 * DEFAULT_MAX_EXAMPLES
)
settings.load_profile("markov")

# A shell without job control starts background commands with SIGINT ignored, and an ignored
# signal stays ignored across exec: the workers and every child a test starts would shrug off
# the Ctrl-C that the tests of SIGINT send. Ctrl-C means KeyboardInterrupt here, as in a terminal
# (a handler set in Python is reset to the default in the children a test execs).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_MARKOV_ENV = (
    "MARKOV_MODE",
    "MARKOV_ENDPOINT",
    "MARKOV_API_KEY",
    "MARKOV_DIR",
    "MARKOV_CONFIG",
    "MARKOV_WEBHOOK_URL",
    "MARKOV_CA_BUNDLE",
    "MARKOV_CAPTURE_ENVIRONMENT",
    "MARKOV_PROMETHEUS_PORT",
    "MARKOV_EXPORT_POINTS",
    "MARKOV_TRACE_CHILDREN",
    "MARKOV_SYSTEM_METRICS",
    "MARKOV_SYSTEM_METRICS_INTERVAL",
    "MARKOV_RANKS",
    "MARKOV_RECORDING_ID",
    # a launcher's variables (a suite run under torchrun must not become a distributed job)
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "MARKOV_ALERT_COOLDOWN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads the developer's config or writes outside tmp_path; env capture and system
    metrics off (tests that count points exactly stay exact; tests/test_system_metrics.py turns
    them on)."""
    for name in _MARKOV_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MARKOV_CONFIG", str(tmp_path / "config" / "config.json"))
    monkeypatch.setenv("MARKOV_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MARKOV_CAPTURE_ENVIRONMENT", "0")
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS", "0")
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "runs"
