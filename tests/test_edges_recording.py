"""The edges of "nothing lost, nothing doubled" on the recording side (issue 9): steps, memory,
file descriptors, what rides on every batch, and the spool's torn-tail repair.

Each test tries hardest to break one promise: threads racing for steps, a step at the end of
int64, a hyperparameter that cannot be printed, a full disk under a fast loop, 300 runs in one
process, a megabyte of notes, a 200 KB torn line.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import child_process
import pytest
from otlp_files import last_resource, lines, points, recording

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.recording.recorder import MAX_BUFFERED
from markov_otel.shipping import runs
from markov_otel.shipping.spool import Spool

INT64_MAX = 2**63 - 1


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("edges", recording_mode=RecordingMode.OFFLINE, **kwargs)


# -- steps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [INT64_MAX, INT64_MAX - 2])
def test_default_step_past_the_last_int64_is_refused_and_keeps_nothing(
    isolated: Path, start: int
) -> None:
    """Default steps walk up to 2**63-1; the one after would overflow: ConfigError, not a line
    that no reader (nor the backend) could take; explicit steps go on."""
    recorder = offline()
    with recorder:
        recorder.add_record({"x": 1.0}, step=start)
        for _ in range(start, INT64_MAX):
            recorder.add_record({"x": 1.0})
        with pytest.raises(ConfigError, match=r"2\*\*63-1.*step="):
            recorder.add_record({"x": 2.0})
        recorder.add_record({"x": 3.0}, step=5)
        recorder.add_record({"x": 4.0})
    got = [(p.step, p.value) for p in points(isolated / recorder.recording_id)]
    assert got == [(s, 1.0) for s in range(start, INT64_MAX + 1)] + [(5, 3.0), (6, 4.0)]


def test_threads_mixing_explicit_and_default_steps_never_share_a_default_step(
    isolated: Path,
) -> None:
    """4 threads on default steps and 2 passing step= at once (GIL switching every microsecond):
    every record stored once, each explicit step as given, no two default steps alike."""
    defaults_n, explicit_n, per_thread = 4, 2, 3000
    base, gap = 10**9, 10**6  # each step= restarts the defaults in a range of its own
    explicit_index = itertools.count()
    recorder = offline(batch_size=500, batch_processing_interval=0.05)
    barrier = threading.Barrier(defaults_n + explicit_n)

    def default_steps(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            recorder.add_record({"id": t * per_thread + i})

    def explicit_steps(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            j = next(explicit_index)
            recorder.add_record({"id": t * per_thread + i, "j": j}, step=base + gap * j)

    workers = [threading.Thread(target=default_steps, args=(t,)) for t in range(defaults_n)]
    workers += [
        threading.Thread(target=explicit_steps, args=(t,))
        for t in range(defaults_n, defaults_n + explicit_n)
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with recorder:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        sys.setswitchinterval(interval)
    got = points(isolated / recorder.recording_id)
    ids = Counter(p.value for p in got if p.key == "id")
    assert len(ids) == (defaults_n + explicit_n) * per_thread and set(ids.values()) == {1}
    explicit = {p.step: p.value for p in got if p.key == "j"}
    assert len(explicit) == explicit_n * per_thread
    assert all(step == base + gap * j for step, j in explicit.items())
    default = [p.step for p in got if p.key == "id" and p.step not in explicit]
    assert len(default) == defaults_n * per_thread == len(set(default))


def test_an_explicit_step_restarts_the_defaults_after_it_whether_or_not_it_was_next(
    isolated: Path,
) -> None:
    """step=i in order (the defaults' own next step), a repeated step, a jump back and one
    ahead: each default step is the previous step + 1."""
    recorder = offline()
    calls: list[int | None] = [0, 1, 2, None, 3, 3, None, 1, None, None, 40, None, 40, None]
    with recorder:
        for n, step in enumerate(calls):
            recorder.add_record({"n": n}, step=step)
    got = [p.step for p in sorted(points(isolated / recorder.recording_id), key=lambda p: p.value)]
    assert got == [0, 1, 2, 3, 3, 3, 4, 1, 2, 3, 40, 41, 40, 41]


# -- what is checked at the call ---------------------------------------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_a_hyperparameter_whose_str_raises_is_refused_at_the_call(isolated: Path) -> None:
    """add_hyper_parameters after start() with an unprintable value: ConfigError naming it;
    every later record is written and stop() does not raise."""
    recorder = offline(batch_processing_interval=0.05)
    with recorder:
        recorder.add_record({"loss": 1.0})
        with pytest.raises(ConfigError, match=r"hyper_parameters\['bad'\].*str\(\)"):
            recorder.add_hyper_parameters({"lr": 0.1, "bad": Unprintable()})
        recorder.add_hyper_parameters({"lr": 0.2})
        for i in range(100):
            recorder.add_record({"loss": float(i)})
    run = isolated / recorder.recording_id
    assert len(points(run)) == 101
    assert recording(run)["status"] == "finished"
    assert last_resource(run)["markov.hparam.lr"] == 0.2
    assert "markov.hparam.bad" not in last_resource(run)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"opt": {"name": "a\x00b"}}, r"hyper_parameters\['opt'\]\['name'\].*NUL"),
        ({"k\udc80": 1}, r"hyper_parameters key 'k\\udc80'.*surrogate"),
        ({"a.b": 1, "a": {"b": 2}}, r"'a\.b' is given twice"),
        ({"deep": json.loads('{"a":' * 40 + "1" + "}" * 40)}, r"nested more than 16"),
    ],
)
def test_hyperparameters_the_backend_cannot_store_are_refused(params: Any, named: str) -> None:
    """NUL, a lone surrogate, a key given twice, nesting past 16: refused at the call."""
    recorder = offline()
    with pytest.raises(ConfigError, match=named):
        recorder.add_hyper_parameters(params)


def test_numpy_and_objects_in_hyperparameters_are_fixed_at_the_call(isolated: Path) -> None:
    """numpy numbers become numbers, other objects their str() at the call, not later."""
    import numpy as np

    class Mutable:
        text = "before"

        def __str__(self) -> str:
            return self.text

    thing = Mutable()
    with offline(hyper_parameters={"n": np.int64(3), "f": np.float32(0.5), "o": thing}) as rec:
        thing.text = "after"
        rec.add_record({"loss": 1.0})
    attrs = last_resource(isolated / rec.recording_id)
    assert (attrs["markov.hparam.n"], attrs["markov.hparam.f"]) == (3, 0.5)
    assert attrs["markov.hparam.o"] == "before"


# -- memory ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_size_above_the_buffer_bound_still_reaches_disk(isolated: Path) -> None:
    """batch_size=1M, interval=1 h: once MAX_BUFFERED records wait, the flusher writes them
    (before, nothing reached disk until a million records or an hour)."""
    n = MAX_BUFFERED + 100_000
    proc = child_process.start("big-batch", n)
    try:
        run_id = child_process.said_next(proc, "id")
        assert child_process.said_next(proc, "recorded") == str(n)
        spool, deadline = Spool(isolated / run_id), time.monotonic() + 60
        while spool.points_on_disk()[0] < 2 * MAX_BUFFERED and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child_process.end(proc)
    assert spool.points_on_disk()[0] >= 2 * MAX_BUFFERED  # two keys a record


@pytest.mark.slow
@pytest.mark.timeout(600)  # 300k records: 119 s beside two CPU hogs, near the 120 s default
def test_kill9_loses_at_most_the_last_flush_interval(isolated: Path) -> None:
    """A tight loop with batch_processing_interval=0.2: after kill -9, every record made more
    than one interval before the kill is on disk (backpressure holds the loop to the disk)."""
    interval = 0.2  # recording_child's setting
    proc = child_process.start("timed")
    try:
        run_id = child_process.said_next(proc, "id")
        made: list[tuple[int, float]] = []
        while len(made) < 60:  # 300k records: well past the buffer bound, loop at full speed
            n, t = child_process.said_next(proc, "progress").split()
            made.append((int(n), float(t)))
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
    finally:
        child_process.end(proc)
    steps = sorted(p.step for p in points(isolated / run_id) if p.key == "acc")
    assert steps == list(range(len(steps)))  # a gapless prefix
    old_enough = max(n for n, t in made if t < killed_at - interval)
    assert len(steps) >= old_enough, (len(steps), old_enough)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@needs_root
@pytest.mark.slow
def test_a_full_disk_holds_memory_bounded_and_loses_nothing(tmp_path: Path) -> None:
    """A fast loop on a full disk waits once MAX_UNWRITTEN_BYTES are held (memory bounded, no
    drop); after space returns every record is on disk once."""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    n = 1_000_000  # ~150 MB of OTLP-JSON: twice what may wait in memory
    proc = child_process.start("progress", n, MARKOV_DIR=str(disk))
    try:
        run_id = child_process.said_next(proc, "id")
        last, still_since = 0, time.monotonic()
        while time.monotonic() - still_since < 3.0:  # until the loop has waited 3 s
            line = _line_within(proc, 1.0)
            if line and line.startswith("progress"):
                last, still_since = int(line.split()[1]), time.monotonic()
        assert last < n, "the loop never waited: memory grew with the disk full"
        assert rss_mb(proc.pid) < 700
        subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
        assert child_process.said_next(proc, "done") == ""
        proc.communicate(timeout=120)
        steps = [p.step for p in runs.points(Spool(disk / run_id), "acc")]
        assert steps == list(range(n))
    finally:
        child_process.end(proc)
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _line_within(proc: subprocess.Popen[str], seconds: float) -> str | None:
    """The child's next stdout line, or None if none comes within `seconds`."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(seconds):
            return None
    return proc.stdout.readline()


# -- resources -----------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_a_sweep_of_300_runs_leaks_no_fd_and_no_thread(isolated: Path) -> None:
    """300 recorders started and stopped in one process hold no fd and no thread afterwards."""
    with offline() as warm:  # imports, lazy singletons and the first thread pools are made once
        warm.add_record({"x": 1.0})
    fds, threads = open_fds(), threading.active_count()
    for i in range(300):
        with offline(batch_processing_interval=0.05) as recorder:
            recorder.add_record({"x": float(i)})
    assert open_fds() == fds
    assert threading.active_count() == threads


def test_one_megabyte_of_notes_rides_once_not_on_every_batch(isolated: Path) -> None:
    """1 MB notes and a 100 KB hyperparameter: kept whole in recording.json, named as omitted
    on batches, and 50 batches stay small."""
    notes = "n" * 1_000_000
    recorder = offline(
        notes=notes, hyper_parameters={"prompt": "p" * 100_000, "lr": 0.1}, batch_size=1
    )
    with recorder:
        for i in range(50):
            recorder.add_record({"loss": float(i)})
    run = isolated / recorder.recording_id
    assert len(lines(run, "metrics")) >= 25
    assert recording(run)["notes"] == notes
    assert recording(run)["hyper_parameters"]["prompt"] == "p" * 100_000
    size = (run / "metrics.jsonl").stat().st_size
    assert size < 200_000, size  # 8.4 MB before
    attrs = last_resource(run)
    assert "markov.notes" not in attrs and "markov.hparam.prompt" not in attrs
    omitted = [v.string_value for v in attrs["markov.resource.omitted"].values]
    assert omitted == ["markov.hparam.prompt", "markov.notes"]
    assert attrs["markov.hparam.lr"] == 0.1


# -- the spool ---------------------------------------------------------------------------------


def test_the_spool_closes_its_files_and_a_late_append_still_lands(tmp_path: Path) -> None:
    """After close() no fd is held; an append after it (a straggler) opens, writes, closes."""
    spool = Spool(tmp_path / "run")
    spool.create()
    before = open_fds()
    spool.append("logs", b"{}\n")
    assert open_fds() == before + 1
    spool.close()
    assert open_fds() == before
    spool.append("logs", b"{}\n")
    assert open_fds() == before
    assert (tmp_path / "run" / "logs.jsonl").read_bytes() == b"{}\n{}\n"


# -- alerts keep infinities apart ------------------------------------------------------------------


def test_alerts_on_infinities_keep_their_sign_in_the_run_and_on_the_backend(
    isolated: Path, backend: Any
) -> None:
    """+inf and -inf firing alerts are "Infinity" and "-Infinity" (not "NaN", not a bare token)
    in recording.json, the alert log event and the backend's alerts."""
    from backend_fixture import online_recorder

    from markov_otel import BinaryOperation, ExperimentAlertCondition

    recorder = online_recorder(backend.url, backend.token)
    recorder.attach_alert_on(
        ExperimentAlertCondition("x", BinaryOperation.GREATER_THAN, 1e300), "up"
    )
    recorder.attach_alert_on(
        ExperimentAlertCondition("x", BinaryOperation.LESS_THAN, -1e300), "down"
    )
    with recorder:
        recorder.add_record({"x": float("inf")})
        recorder.add_record({"x": float("-inf")})
    run = isolated / recorder.recording_id
    text = (run / "recording.json").read_text()
    assert [a["value"] for a in json.loads(text)["alerts"]] == ["Infinity", "-Infinity"]
    import requests

    stored = requests.get(
        f"{backend.url}/api/v1/recordings/{recorder.recording_id}/alerts",
        headers=backend.headers,
        timeout=10,
    ).json()
    assert [(a["text"], a["value"]) for a in stored] == [("up", "Infinity"), ("down", "-Infinity")]
