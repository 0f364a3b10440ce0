"""One rank of a pretend distributed job, for tests/test_distributed.py: `python rank_child.py`.

The test sets the launcher's variables (RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_RUN_ID) and the
recorder's (MARKOV_*). Every rank records `loss` = the step for STEPS steps, about 0.05 s apart,
and adds its rank to the summary and its own `lr` hyperparameter (only rank 0's may reach the
backend). With FAIL_ON_RANK=<r>, that rank raises inside `with recorder:` (its status: failed);
with CRASH_ON_RANK=<r> likewise, but the exception is not caught: the process dies of it.
Prints `recording <id>` and `dir <run dir>`.
"""

from __future__ import annotations

import contextlib
import os
import time

import requests

from markov_otel import ExperimentRecorder

STEPS = 5


def main() -> None:
    rank = int(os.environ["RANK"])
    recorder = ExperimentRecorder("ranked", hyper_parameters={"lr": 0.1 * (rank + 1)})
    print(f"recording {recorder.recording_id}", flush=True)
    print(f"dir {recorder.run_dir}", flush=True)
    try:
        with recorder:
            for step in range(STEPS):
                recorder.add_record({"loss": float(step)})
                time.sleep(0.1)  # so that the sampler (0.1 s) has a stretch to measure
            recorder.summary.add("rank", rank)
            if os.environ.get("FAIL_ON_RANK") == str(rank):
                raise RuntimeError(f"rank {rank} fails on purpose")
            if os.environ.get("CRASH_ON_RANK") == str(rank):
                registered_by_rank_0(recorder.recording_id)
                raise ValueError(f"rank {rank} crashes")  # not caught: the process exits 1
    except RuntimeError as exc:
        print(f"failed: {exc}", flush=True)


def registered_by_rank_0(recording_id: str) -> None:
    """Online, wait (up to 60 s) until the backend knows the recording: the crash makes torchrun
    end rank 0, and on a loaded machine rank 0 may not have registered it yet (its points would
    then wait in its run dir for `mkv sync`, and the test would find no recording)."""
    endpoint = os.environ.get("MARKOV_ENDPOINT")
    if not endpoint:
        return
    url = f"{endpoint}/api/v1/recordings/{recording_id}"
    headers = {"Authorization": f"Bearer {os.environ.get('MARKOV_API_KEY', '')}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return
        time.sleep(0.05)


if __name__ == "__main__":
    main()
