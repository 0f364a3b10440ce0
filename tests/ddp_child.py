"""A two-process DDP training script for tests/test_distributed.py: `torchrun ... ddp_child.py`.

Every rank builds the same recorder (the settings come from the environment the test sets:
MARKOV_MODE, MARKOV_ENDPOINT, MARKOV_API_KEY, MARKOV_DIR, MARKOV_SYSTEM_METRICS*), trains a tiny
linear model with DistributedDataParallel on the gloo backend (CPU) for STEPS steps, recording
the loss each step. Rank 0 prints `recording <id>`; each rank prints `rank <r> dir <run dir>`.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from otlp_files import until_sampled
from said import say
from torch.nn.parallel import DistributedDataParallel

from markov_otel import ExperimentRecorder

STEPS = 20


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = ExperimentRecorder("ddp-tiny", hyper_parameters={"lr": 0.1, "steps": STEPS})
    with recorder:
        for _ in range(STEPS):
            x = torch.randn(8, 4)
            loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
            optimizer.zero_grad()
            loss.backward()  # the gradients are all-reduced between the ranks here
            optimizer.step()
            recorder.add_record({"loss": loss.item()})
            time.sleep(0.05)  # a step's worth of time, so that the sampler (0.1 s) samples
        recorder.summary.add_training_loss(loss.item())
        until_sampled(recorder.run_dir)  # the test counts both ranks' system keys
    if rank == 0:
        say(f"recording {recorder.recording_id}")
    say(f"rank {rank} dir {recorder.run_dir}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
