"""MarkovTracker against real Accelerate on the CPU: one process, and two under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
accelerate = pytest.importorskip("accelerate")

import otlp_files  # noqa: E402
from recorded import only_run, series  # noqa: E402

from markov_otel import ExperimentRecorder, RecordingMode  # noqa: E402
from markov_otel.integrations.accelerate import MarkovTracker  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_log_with_records_config_steps_summary_and_status(isolated: Path) -> None:
    """init_trackers(config) -> hyperparameters; accelerator.log at its steps (text skipped);
    end_training -> the last loss / eval_loss in the summary, finished."""
    tracker = MarkovTracker(name="acc", recording_mode=RecordingMode.OFFLINE)
    accelerator = accelerate.Accelerator(cpu=True, log_with=tracker)
    accelerator.init_trackers("acc", config={"lr": 3e-4, "model": {"layers": 2}})
    for step in range(4):
        accelerator.log({"loss": 1.0 / (step + 1), "note": "text"}, step=step * 10)
    accelerator.log({"eval_loss": 0.7}, step=30)
    assert accelerator.get_tracker("markov", unwrap=True) is tracker.tracker
    accelerator.end_training()
    run = only_run(isolated)
    assert series(run) == {
        "loss": [(0, 1.0), (10, 0.5), (20, 1 / 3), (30, 0.25)],
        "eval_loss": [(30, 0.7)],
    }
    info = otlp_files.recording(run)
    assert info["hyper_parameters"] == {"lr": 3e-4, "model": {"layers": 2}}
    assert info["summary"] == {"training_loss": 0.25, "validation_loss": 0.7, "eval_loss": 0.7}
    assert info["status"] == "finished"


def test_a_given_recorder_is_left_running(isolated: Path) -> None:
    """recorder=: end_training leaves the user's recorder to `with`."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        accelerator = accelerate.Accelerator(cpu=True, log_with=MarkovTracker(recorder))
        accelerator.init_trackers("mine")
        accelerator.log({"loss": 1.0}, step=0)
        accelerator.end_training()
        recorder.add_record({"after": 1.0}, step=1)
    assert series(only_run(isolated)) == {"loss": [(0, 1.0)], "after": [(1, 1.0)]}


@pytest.mark.slow
def test_only_the_main_process_records_under_torchrun(isolated: Path) -> None:
    """torchrun --nproc_per_node=2: one recording, from the main process only: its `loss` and
    `rank` (0) at steps 0..2, and no run dir from the other process."""
    env = {**os.environ, "MARKOV_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1]), str(HERE.parent)])
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(HERE / "accelerate_child.py")],
        env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert said == ["rank 0 main 1", "rank 1 main 0"], done.stdout
    run = only_run(isolated)
    assert series(run) == {
        "loss": [(0, 1.0), (1, 0.5), (2, 1 / 3)],
        "rank": [(0, 0), (1, 0), (2, 0)],
    }
    assert otlp_files.recording(run)["status"] == "finished"
