"""One rank of a pretend distributed job, for tests/test_distributed.py: `python rank_child.py`.

The test sets the launcher's variables (RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_RUN_ID) and the
recorder's (MARKOV_*). Every rank records `loss` = the step for STEPS steps, about 0.05 s apart,
and adds its rank to the summary and its own `lr` hyperparameter (only rank 0's may reach the
backend). With FAIL_ON_RANK=<r>, that rank raises inside `with recorder:` (its status: failed);
with CRASH_ON_RANK=<r> likewise, but the exception is not caught: the process dies of it.
Prints `recording <id>` and `dir <run dir>`.
"""

from __future__ import annotations

import os
import time

from otlp_files import until_sampled
from said import say

from markov_otel import ExperimentRecorder

STEPS = 5


def main() -> None:
    rank = int(os.environ["RANK"])
    recorder = ExperimentRecorder("ranked", hyper_parameters={"lr": 0.1 * (rank + 1)})
    say(f"recording {recorder.recording_id}")
    say(f"dir {recorder.run_dir}")
    try:
        with recorder:
            for step in range(STEPS):
                recorder.add_record({"loss": float(step)})
                time.sleep(0.1)  # so that the sampler (0.1 s) has a stretch to measure
            until_sampled(recorder.run_dir)  # the test counts every rank's system keys
            recorder.summary.add("rank", rank)
            if os.environ.get("FAIL_ON_RANK") == str(rank):
                raise RuntimeError(f"rank {rank} fails on purpose")
            if os.environ.get("CRASH_ON_RANK") == str(rank):
                raise ValueError(f"rank {rank} crashes")  # not caught: the process exits 1
    except RuntimeError as exc:
        say(f"failed: {exc}")


if __name__ == "__main__":
    main()
