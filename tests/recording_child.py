"""A training script for the fault and exit-path tests: `python recording_child.py MODE [N]`.

It records OFFLINE into $MARKOV_DIR, two keys per record (`loss` = the step as a float, `acc` =
the step as an int), and talks to its parent on stdout, one flushed line each:
`id <recording_id>` first, then `checkpoint <n>` (n records made so far) as it goes.

Modes:

- ``kill9 N``: records N, prints the checkpoint, sleeps 0.6 s (3 flush intervals of 0.2 s), then
  records in a tight loop forever, printing `progress <n>` every 10k, until it is SIGKILLed.
- ``sigterm``: inside ``with recorder:``, prints `ready`, then records forever with a checkpoint
  every 10k records, until SIGTERM ends it; then prints `made <n>` (records whose add_record
  returned; the one interrupted by the signal may be on disk too) before the recorder stops.
- ``exit0 N`` / ``exit3 N`` / ``raise N``: inside ``with recorder:``, records N, prints the
  checkpoint, then calls sys.exit(0), sys.exit(3) or raises RuntimeError.
"""

from __future__ import annotations

import sys
import time

from markov_otel import ExperimentRecorder, RecordingMode

PROGRESS_EVERY = 10_000
made = 0  # records whose add_record returned (printed as `made <n>` when SIGTERM ends the loop)


def say(line: str) -> None:
    print(line, flush=True)


def record(recorder: ExperimentRecorder, start: int, stop: int) -> None:
    global made
    for i in range(start, stop):
        recorder.add_record({"loss": float(i), "acc": i})
        made = i + 1


def forever(recorder: ExperimentRecorder, start: int, word: str) -> None:
    i = start
    while True:
        record(recorder, i, i + PROGRESS_EVERY)
        i += PROGRESS_EVERY
        say(f"{word} {i}")


def new_recorder(mode: str) -> ExperimentRecorder:
    return ExperimentRecorder(
        name=f"child-{mode}",
        recording_mode=RecordingMode.OFFLINE,
        batch_processing_interval=0.2,
        sync_data_timeout=10.0,
    )


def main(mode: str, n: int) -> None:
    recorder = new_recorder(mode)
    if mode == "kill9":
        recorder.start()
        say(f"id {recorder.recording_id}")
        record(recorder, 0, n)
        say(f"checkpoint {n}")
        time.sleep(0.6)
        forever(recorder, n, "progress")
    with recorder:
        say(f"id {recorder.recording_id}")
        if mode == "sigterm":
            say("ready")
            try:
                forever(recorder, 0, "checkpoint")
            finally:
                say(f"made {made}")
        record(recorder, 0, n)
        say(f"checkpoint {n}")
        if mode == "exit0":
            sys.exit(0)
        if mode == "exit3":
            sys.exit(3)
        if mode == "raise":
            raise RuntimeError("the training step blew up")
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
