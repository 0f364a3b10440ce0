"""A signal in the middle of stop() (issue 9): the drain finishes, nothing is lost, the status
says what happened.

The child buffers 200k points under the user settings batch_size=1_000_000 and
batch_processing_interval=3600, says `stopping`, and calls stop(); a thread of its own signals
it as soon as stop() holds the signals, while stop() is writing the buffer to disk (a signal
sent by the parent could land after stop() on a loaded machine).
"""

from __future__ import annotations

import signal
from pathlib import Path

import child_process
import pytest
from otlp_files import last_resource, recording

from markov_otel.shipping import runs
from markov_otel.shipping.spool import Spool

N = 50_000  # records of four keys: 200k points, all buffered until stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "code"),
    [(signal.SIGTERM, "terminated", 143), (signal.SIGINT, "interrupted", -signal.SIGINT)],
)
def test_a_signal_during_stop_waits_for_the_drain(
    isolated: Path, signum: int, status: str, code: int
) -> None:
    """SIGTERM (or Ctrl-C) early in stop(): every point on disk, status terminated
    (interrupted), then the signal acts as it would have (exit 143; death by SIGINT)."""
    proc = child_process.start("stop-signal", N, signal.Signals(signum).name)
    try:
        run_id = child_process.said_next(proc, "id")
        assert child_process.said_next(proc, "stopping") == ""
        out, err = proc.communicate(timeout=100)
    finally:
        child_process.end(proc)
    assert proc.returncode == code, err
    assert "stopped" not in out  # stop() returned, then the signal acted
    run = isolated / run_id
    steps = [p.step for p in runs.points(Spool(run), "grad")]
    assert steps == list(range(N))
    assert Spool(run).points_on_disk()[0] == 4 * N
    assert recording(run)["status"] == status
    assert last_resource(run)["markov.status"] == status
    assert f"{signal.Signals(signum).name} during stop()" in err
