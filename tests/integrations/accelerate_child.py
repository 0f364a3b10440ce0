"""A two-process Accelerate script for tests/integrations/test_accelerate.py, run under torchrun:
every process builds the same MarkovTracker (settings from MARKOV_* in the environment), logs
`loss` for STEPS steps with accelerator.log, and ends training. Each prints `rank <r> main <0|1>`.
"""

from __future__ import annotations

from accelerate import Accelerator
from said import say

from markov_otel.integrations.accelerate import MarkovTracker

STEPS = 3


def main() -> None:
    accelerator = Accelerator(cpu=True, log_with=MarkovTracker(name="acc-ddp"))
    accelerator.init_trackers("acc-ddp", config={"lr": 0.1})
    for step in range(STEPS):
        accelerator.log({"loss": 1.0 / (step + 1), "rank": accelerator.process_index}, step=step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    say(f"rank {accelerator.process_index} main {int(accelerator.is_main_process)}")


if __name__ == "__main__":
    main()
