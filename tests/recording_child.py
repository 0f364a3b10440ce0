"""A training script for the fault and exit-path tests: `python recording_child.py MODE [N]`.

It records OFFLINE into $MARKOV_DIR, two keys per record (`loss` = the step as a float, `acc` =
the step as an int), and talks to its parent on stdout, one flushed line each:
`id <recording_id>` first, then `checkpoint <n>` (n records made so far) as it goes.

Modes:

- ``kill9 N``: records N, waits until they are on disk (read back from its run dir), prints the
  checkpoint, then records in a tight loop forever, printing `progress <n>` every 10k, until it
  is SIGKILLed.
- ``sigterm``: inside ``with recorder:``, prints `ready`, then records forever with a checkpoint
  every 10k records, until SIGTERM ends it; then prints `made <n>` (records whose add_record
  returned; the one interrupted by the signal may be on disk too) before the recorder stops.
- ``exit0 N`` / ``exit3 N`` / ``raise N``: inside ``with recorder:``, records N, prints the
  checkpoint, then calls sys.exit(0), sys.exit(3) or raises RuntimeError.
- ``stop-signal N SIGNAME``: the user settings batch_size=1_000_000,
  batch_processing_interval=3600; records N records of four keys, prints `stopping`, calls
  stop(), then prints `stopped`. A thread of its own sends it SIGNAME as soon as stop() holds
  the signals (their handler changed), so the signal lands while stop() drains, however
  slowly the machine runs the parent.
- ``big-batch N``: the same settings; records N records of two keys, prints `recorded N`, then
  sleeps until it is SIGKILLed.
- ``timed``: records in a tight loop forever, printing `progress <n> <time.time()>` every 5k
  records, until it is SIGKILLed.
- ``progress N``: records N records of two keys, printing `progress <n>` every 10k, then
  `done`; stop() as it leaves.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.shipping.spool import Spool

PROGRESS_EVERY = 10_000
made = 0  # records whose add_record returned (printed as `made <n>` when SIGTERM ends the loop)


def say(line: str) -> None:
    print(line, flush=True)


def record(recorder: ExperimentRecorder, start: int, stop: int) -> None:
    global made
    for i in range(start, stop):
        recorder.add_record({"loss": float(i), "acc": i})
        made = i + 1


def on_disk(recorder: ExperimentRecorder, points: int) -> None:
    """Wait until the run dir's metrics file holds `points` points (60 s at most)."""
    spool, deadline = Spool(recorder.run_dir), time.monotonic() + 60
    while spool.points_on_disk()[0] < points:
        if time.monotonic() > deadline:
            raise SystemExit(f"{points} points never reached the disk")
        time.sleep(0.05)


def forever(recorder: ExperimentRecorder, start: int, word: str) -> None:
    i = start
    while True:
        record(recorder, i, i + PROGRESS_EVERY)
        i += PROGRESS_EVERY
        say(f"{word} {i}")


BIG_BATCHES = {"batch_size": 1_000_000, "batch_processing_interval": 3600.0}


def new_recorder(mode: str) -> ExperimentRecorder:
    settings = {"batch_processing_interval": 0.2, "sync_data_timeout": 10.0}
    if mode in ("stop-signal", "big-batch"):
        settings.update(BIG_BATCHES)
    return ExperimentRecorder(
        name=f"child-{mode}", recording_mode=RecordingMode.OFFLINE, **settings
    )


def main(mode: str, n: int) -> None:
    recorder = new_recorder(mode)
    if mode in ("stop-signal", "big-batch", "timed", "progress"):
        recorder.start()
        say(f"id {recorder.recording_id}")
        special(mode, recorder, n)
        return
    if mode == "kill9":
        recorder.start()
        say(f"id {recorder.recording_id}")
        record(recorder, 0, n)
        on_disk(recorder, 2 * n)
        say(f"checkpoint {n}")
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


def special(mode: str, recorder: ExperimentRecorder, n: int) -> None:
    if mode == "stop-signal":
        for i in range(n):
            recorder.add_record({"loss": float(i), "acc": i, "lr": 0.1, "grad": 1.5})
        signal_once_held(signal.Signals[sys.argv[3]])
        say("stopping")
        recorder.stop()
        say("stopped")
    elif mode == "big-batch":
        record(recorder, 0, n)
        say(f"recorded {n}")
        time.sleep(3600)
    elif mode == "timed":
        i = 0
        while True:
            record(recorder, i, i + 5000)
            i += 5000
            say(f"progress {i} {time.time()}")
    else:
        for i in range(0, n, 10_000):
            record(recorder, i, min(n, i + 10_000))
            say(f"progress {min(n, i + 10_000)}")
        say("done")
        recorder.stop()


def signal_once_held(signum: int) -> None:
    """Send this process `signum` from a thread once its handler is no longer the one it is
    now (stop() holds SIGINT and SIGTERM while it drains)."""
    before = signal.getsignal(signum)

    def send() -> None:
        deadline = time.monotonic() + 60  # stop() that never holds the signal: exit unsignalled
        while signal.getsignal(signum) == before:
            if time.monotonic() > deadline:
                return
            time.sleep(0.001)
        os.kill(os.getpid(), signum)

    threading.Thread(target=send, daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
