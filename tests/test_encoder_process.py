"""The encoder process (markov_otel/shipping/encoder_process.py): the same points as the flusher
alone, nothing lost or doubled when it is killed or stops answering, and no process left behind."""

from __future__ import annotations

import json
import math
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
from hypothesis import given, settings
from hypothesis import strategies as st
from otlp_files import lines, metrics, points
from polling import until

from markov_otel import ExperimentRecorder, RecordingMode


def recorder(mode: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> ExperimentRecorder:
    monkeypatch.setenv("MARKOV_ENCODER_PROCESS", mode)
    return ExperimentRecorder("enc", recording_mode=RecordingMode.OFFLINE, **kwargs)


def mixed(i: int) -> dict[str, Any]:
    """Floats mostly; now and then ints, a bool, NaN, a nested dict, a key to sanitise."""
    record: dict[str, Any] = {"loss": 1.0 / (i + 1), "acc": i * 0.001}
    if i % 97 == 0:
        record.update({"epoch": i // 97, "flag": True, "bad": math.nan, "val": {"loss": 0.5}})
    if i % 501 == 0:
        record["odd key (µ)"] = float(i)
    return record


def stored(run: Path) -> Counter[tuple[str, int, str]]:
    return Counter((p.key, p.step, repr(p.value)) for p in points(run))


def encoder_pid(rec: ExperimentRecorder) -> int:
    """The pid of the recorder's encoder process, once it has started."""
    until(lambda: rec._flusher._process is not None and rec._flusher._process.ready)
    process = rec._flusher._process
    assert process is not None
    return process.pid


def gone(pid: int, within: float = 0.0) -> bool:
    """Whether process `pid` has ended (waiting up to `within` seconds for it to)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.slow
def test_the_process_stores_exactly_what_the_flusher_alone_stores(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20k mixed records through the process (every batch, mode always) and through the
    flusher alone (mode never): the same points, each once, and lines the proto classes read."""
    runs = {}
    for mode in ("always", "never"):
        rec = recorder(mode, monkeypatch, batch_size=250)
        with rec:
            for i in range(20_000):
                rec.add_record(mixed(i))
            rec.add_record({f"wide{k}": float(k) for k in range(300)})
            handed = rec._flusher._seq
        runs[mode] = isolated / rec.recording_id
        assert (handed > 0) == (mode == "always")
    assert stored(runs["always"]) == stored(runs["never"])
    assert set(stored(runs["always"]).values()) == {1}
    assert len(metrics(runs["always"])) == len(lines(runs["always"], "metrics"))


@pytest.mark.slow
def test_a_killed_encoder_process_loses_nothing_and_doubles_nothing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the process while batches are in flight: the flusher cuts back what it left
    unanswered and encodes those batches itself; every record is stored once, and it says so
    in one line."""
    n = 60_000
    rec = recorder("always", monkeypatch, batch_size=200)
    with rec:
        for i in range(n):
            rec.add_record({"i": i, "x": 0.5})
            if i == 20_000:
                pid = encoder_pid(rec)
            if i == 30_000:  # batches in flight: the loop outruns the process
                os.kill(pid, signal.SIGKILL)
    steps = Counter(p.step for p in points(isolated / rec.recording_id) if p.key == "i")
    assert sorted(steps) == list(range(n)) and set(steps.values()) == {1}
    assert sum("the encoder process ended" in r.getMessage() for r in caplog.records) == 1
    assert gone(pid)


@pytest.mark.slow
def test_an_encoder_process_that_stops_answering_cannot_hang_stop_nor_double_a_batch(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP the process while it holds a batch, and append what it might have written of
    batches it never answers for (a copy of the last line, half a line after it): stop() still
    ends, the flusher cuts the file back to the last batch answered, and every record is on
    disk once."""
    n = 30_000
    rec, spool = half_recorded(isolated, monkeypatch, n)
    pid = stop_answering(rec, spool, range(n // 2, n // 2 + 1000))
    for i in range(n // 2 + 1000, n):
        rec.add_record({"i": i})
    t0 = time.monotonic()
    rec.stop()
    assert time.monotonic() - t0 < 30  # a hang, not a speed: ANSWER_TIMEOUT is 5 s
    steps = Counter(p.step for p in points(isolated / rec.recording_id))
    assert sorted(steps) == list(range(n)) and set(steps.values()) == {1}
    assert gone(pid, within=10)


@pytest.mark.slow
def test_stop_drains_a_backlog_in_both_encoders_with_every_line_in_record_order(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() finds a backlog of wide records (the test holds the flusher from taking any
    until stop() has begun): the flusher encodes some of its batches itself as the process
    encodes the others (the training thread is done with the GIL), and writes its own only
    once the process has written what it holds, so the file keeps record order: every step
    once, each line's steps after the line before's."""
    n, width, batch = 12_000, 40, 1000  # a backlog of 11 batches
    rec = recorder("always", monkeypatch, batch_size=batch, batch_processing_interval=60)
    rec.start()
    for i in range(batch):  # a first batch, taken at once: the process starts and is ready
        rec.add_record({f"k{k}": i + k * 1e-3 for k in range(width)})
    encoder_pid(rec)
    flusher = rec._flusher
    until(lambda: not rec._buffer)
    with flusher.taking:  # no batch leaves the buffer until stop() is under way
        before = flusher._seq
        for i in range(batch, n):
            rec.add_record({f"k{k}": i + k * 1e-3 for k in range(width)})
        stopping = threading.Thread(target=rec.stop)
        stopping.start()
        until(lambda: flusher._stopping)
    stopping.join()
    handed = flusher._seq - before
    # Each encoded its share of the backlog's batches: the flusher encodes one while the
    # process encodes the next (about half each: the process does not sit idle).
    backlog = n // batch - 1
    assert backlog // 3 <= handed <= backlog - backlog // 3
    steps = [
        int(point["attributes"][0]["value"]["intValue"])
        for line in lines(isolated / rec.recording_id, "metrics")
        for metric in json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        if metric["name"] == "k0"
        for point in metric["gauge"]["dataPoints"]
    ]
    assert steps == list(range(n))  # each once, and in record order across the lines


def half_recorded(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> tuple[ExperimentRecorder, Path]:
    """A started recorder (every batch to the process, 500 records each) that has recorded
    steps 0 .. n/2 - 1 and whose process has written a batch; and its metrics file."""
    rec = recorder("always", monkeypatch, batch_size=500)
    rec.start()
    spool = isolated / rec.recording_id / "metrics.jsonl"
    for i in range(n // 2):
        rec.add_record({"i": i})
    until(lambda: spool.exists() and spool.stat().st_size > 0)
    return rec, spool


def stop_answering(rec: ExperimentRecorder, spool: Path, records: range) -> int:
    """SIGSTOP the encoder process while it holds nothing, record `records` so that it is handed
    a batch it will never answer for, and append what it might have written of that batch (a
    copy of the last line, then half of it); the pid."""
    flusher = rec._flusher
    # Idle first: every batch answered and read, nothing buffered. The flusher notes where the
    # file ends when it hands a batch to an idle process, before sending it; a tail appended
    # before that note would count as answered (under load a test once appended it there).
    until(lambda: not flusher._buffer and not flusher._handed, "the flusher idle")
    pid = encoder_pid(rec)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = flusher._seq  # the process answers no batch handed after this one
    for i in records:
        rec.add_record({"i": i})
    flusher.wake()

    def holds_one_unanswered() -> bool:
        handed = list(flusher._handed)
        return flusher._process is not None and any(
            seq > stopped_at and size for seq, _batch, size in handed
        )

    until(holds_one_unanswered, "a batch handed whole to the stopped process", seconds=4)
    last = spool.read_bytes().splitlines(keepends=True)[-1]
    with spool.open("ab") as unanswered:
        unanswered.write(last + last[: len(last) // 2])
    if flusher._process is None:  # dropped before the tail was there: nothing left to test
        pytest.skip("the machine was too busy to append the tail within ANSWER_TIMEOUT")
    return pid


def test_the_encoder_process_ends_with_its_recorder(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After stop() the process has exited (its input ended) and been waited for."""
    rec = recorder("always", monkeypatch)
    with rec:
        for i in range(5000):
            rec.add_record({"i": i})
        pid = encoder_pid(rec)
    assert gone(pid)
    assert len(points(isolated / rec.recording_id)) == 5000


def test_the_encoder_process_imports_neither_the_recorder_nor_the_otel_sdk() -> None:
    """The process imports what encoding needs: markov_otel's public names load on first use,
    so the recorder, the OTel SDK and requests stay out, and the process is ready in ~50 ms
    rather than ~220 (a tight loop's records pile up until it is)."""
    heavy = ("markov_otel.recording.recorder", "opentelemetry.sdk", "requests")
    code = (
        "import sys, markov_otel.shipping.encoder_process; "
        f"print([m for m in {heavy} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_process_runs_this_markov_otel_whatever_the_working_directory_holds(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A training script started where another `markov_otel` lies (a checkout, another
    version): the process still imports the one the recorder runs on, and takes the batches."""
    decoy = tmp_path / "elsewhere" / "markov_otel"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the markov_otel of the cwd')\n")
    monkeypatch.chdir(decoy.parent)
    rec = recorder("always", monkeypatch)
    with rec:
        for i in range(5000):
            rec.add_record({"i": float(i)})
    assert rec._flusher._seq > 0 and not rec._flusher._process_dropped
    assert len(points(isolated / rec.recording_id)) == 5000


@pytest.mark.slow
def test_a_tight_loop_starts_the_process_by_itself(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode auto: a loop that outruns the flusher hands batches over; a slow one does not."""
    fast = recorder("auto", monkeypatch)
    with fast:
        # The loop outruns the flusher for certain (the test holds it from taking any batch,
        # as a busy machine may not): 100 batches, past START_BATCHES (8), wait in one cycle.
        with fast._flusher.taking:
            for i in range(100_000):
                fast.add_record({"a": float(i), "b": 0.5})
        # Started (whether it gets ready before the flusher has encoded the pile itself is a
        # race of process start-up against encoding), and before stop(), which starts none.
        until(lambda: fast._flusher._process is not None)
    slow = recorder("auto", monkeypatch)
    with slow:
        for i in range(200):
            slow.add_record({"a": float(i)})
            time.sleep(0.001)
    assert slow._flusher._seq == 0  # never handed a batch: never started
    assert len(points(isolated / fast.recording_id)) == 200_000


@pytest.mark.slow
def test_kill9_of_the_training_process_leaves_a_gapless_prefix_and_no_encoder_behind(
    isolated: Path,
) -> None:
    """kill -9 of a tight loop whose batches go through the process: what is on disk is a
    gapless prefix of the records, and the process exits at the end of its input."""
    proc = child_process.start("timed", MARKOV_ENCODER_PROCESS="always")
    try:
        run_id = child_process.said_next(proc, "id")
        for _ in range(40):
            child_process.said_next(proc, "progress")
        encoders = _encoders_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        child_process.end(proc)
    assert encoders, "the tight loop ran without an encoder process"
    assert all(gone(pid, within=10) for pid in encoders)
    steps = sorted(p.step for p in points(isolated / run_id) if p.key == "acc")
    assert steps and steps == list(range(len(steps)))


def _encoders_of(parent: int) -> list[int]:
    """Pids of the encoder processes whose parent is `parent` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"markov_otel.shipping.encoder_process" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_process_that_cannot_start_leaves_the_flusher_encoding_quietly(
    isolated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interpreter that cannot start (a broken environment: here a sitecustomize on its
    PYTHONPATH that exits at once) ends before a word: every record is stored by the flusher,
    and nothing is said."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    rec = recorder("always", monkeypatch, batch_size=100)
    with rec:
        for i in range(20_000):
            rec.add_record({"i": i})
    assert rec._flusher._seq == 0 and rec._flusher._process_dropped
    assert len(points(isolated / rec.recording_id)) == 20_000
    assert not [r for r in caplog.records if "encoder process" in r.getMessage()]


def test_a_fork_holds_no_end_of_the_encoder_pipes(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork (a DataLoader worker) of a recording process points its copies of the encoder's
    pipe descriptors at /dev/null: the process still sees its input end with the recorder."""
    rec = recorder("always", monkeypatch)
    with rec:
        for i in range(5000):
            rec.add_record({"i": i})
        pid = encoder_pid(rec)
        process = rec._flusher._process
        assert process is not None
        fds = (process._to, process._from)
        child = os.fork()
        if child == 0:  # the fork: exit 0 only if both descriptors are /dev/null now
            ok = all(os.readlink(f"/proc/self/fd/{fd}") == os.devnull for fd in fds)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for i in range(5000, 10_000):
            rec.add_record({"i": i})
    assert gone(pid)
    assert sorted(p.step for p in points(isolated / rec.recording_id)) == list(range(10_000))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_an_encoder_process_on_a_full_disk_hands_its_batches_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The process's write fails on a full disk: it says why and ends, the flusher says it in
    one line and keeps the batches in memory like its own; once space returns every record is
    on disk once. (Cutting back a torn write: the stall test.)"""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        n = 20_000  # ~3 MB of OTLP-JSON: twelve times the disk
        rec = recorder("always", monkeypatch, batch_size=500, markov_dir=str(disk))
        rec.start()
        pid = encoder_pid(rec)
        for i in range(n):
            rec.add_record({"i": i, "x": 0.5})
        rec._flusher.wake()
        until(lambda: rec._flusher._process is None)  # the process gave its batches back
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        rec.stop()
        steps = Counter(p.step for p in points(disk / rec.recording_id) if p.key == "i")
        assert sorted(steps) == list(range(n)) and set(steps.values()) == {1}
        said = [r.getMessage() for r in caplog.records if "encoder process ended" in r.getMessage()]
        assert len(said) == 1 and "No space left" in said[0], said
        assert gone(pid, within=10)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_file_that_cannot_be_cut_holds_the_unanswered_batches_until_it_can(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The process stops answering with unanswered bytes at the file's end (a copy of its last
    line, then half of it), and the file refuses to be cut: append-only (chattr +a), so appends
    still work. The flusher writes nothing after that tail: it keeps the batches in memory,
    says so once, and once the file can be cut, cuts it and writes them: every record once."""
    n = 20_000
    rec, spool = half_recorded(isolated, monkeypatch, n)
    if subprocess.run(["chattr", "+a", str(spool)], capture_output=True).returncode != 0:
        rec.stop()
        pytest.skip("this filesystem (or user) cannot make a file append-only")
    try:
        stop_answering(rec, spool, range(n // 2, n // 2 + 1000))
        until(lambda: any("cannot cut" in r.getMessage() for r in caplog.records))
        for i in range(n // 2 + 1000, n):  # the loop goes on meanwhile
            rec.add_record({"i": i})
    finally:
        subprocess.run(["chattr", "-a", str(spool)], check=True)
    rec.stop()
    steps = Counter(p.step for p in points(isolated / rec.recording_id))
    assert sorted(steps) == list(range(n)) and set(steps.values()) == {1}
    assert sum("cannot cut" in r.getMessage() for r in caplog.records) == 1


def test_records_with_their_keys_in_another_order_keep_each_value_under_its_key(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch (taken at stop) of records holding the same keys in alternating orders goes
    over as one run of columns in the first record's order (`encoding.layout`): through the
    process and through the flusher alone, each value is stored under its own key, the lines
    cut small hold every point once, and the last values are each key's own."""
    n = 3000
    for mode in ("always", "never"):
        rec = recorder(mode, monkeypatch, batch_size=n, batch_processing_interval=60,
                       max_batch_bytes=20_000)  # fmt: skip
        with rec:
            for i in range(n):  # the first record (b, a), the last (a, b)
                rec.add_record({"a": float(i), "b": -float(i)} if i % 2 else {"b": -i, "a": i})
        assert (rec._flusher._seq > 0) == (mode == "always")  # handed over, or not
        run = isolated / rec.recording_id
        values = {(p.key, p.step): p.value for p in points(run)}
        assert len(points(run)) == 2 * n
        assert all(values["a", i] == i and values["b", i] == -i for i in range(n))
        assert len(lines(run, "metrics")) > 10  # the batch was cut into several lines
        last = json.loads((run / "recording.json").read_text())["last_values"]
        assert last == {"a": n - 1, "b": -(n - 1)}


def test_the_process_starts_the_disks_writeback_every_writeback_bytes(tmp_path: Path) -> None:
    """`_Writeback` asks for an fdatasync once WRITEBACK_BYTES were appended since the last,
    and its thread does it; below that, nothing is asked."""
    from markov_otel.shipping.encoder_process import WRITEBACK_BYTES, _Writeback

    fd = os.open(tmp_path / "metrics", os.O_WRONLY | os.O_CREAT)
    try:
        writeback = _Writeback(fd)
        os.write(fd, b"x" * 4096)
        assert not writeback.wrote(WRITEBACK_BYTES - 1)
        assert writeback.wrote(1)
        until(lambda: writeback.synced == 1)
        assert not writeback.wrote(WRITEBACK_BYTES // 2)
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_stalled_process_is_handed_at_most_in_flight_batches(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP the process: the flusher hands batches over until IN_FLIGHT of them wait
    unanswered, then waits for an answer and hands over no more; once it drops the process,
    every record is stored once."""
    from markov_otel.shipping.flusher import IN_FLIGHT

    n = 4000
    rec = recorder("always", monkeypatch, batch_size=100)
    rec.start()
    try:
        pid = encoder_pid(rec)
        flusher = rec._flusher
        before = flusher._seq
        os.kill(pid, signal.SIGSTOP)
        for i in range(n):
            rec.add_record({"a": float(i), "b": 0.5})
        flusher.wake()
        # Dropped once ANSWER_TIMEOUT (5 s) passes with no answer; what it was handed until
        # then is counted after the fact, so no window of time has to be caught.
        until(lambda: flusher._process_dropped, "the stalled process to be dropped")
        assert flusher._seq - before == IN_FLIGHT + 1  # the one waited on, and no more
    finally:
        rec.stop()  # a failed check must not leave its flusher logging into the next test
    counted = Counter((p.key, p.step) for p in points(isolated / rec.recording_id))
    assert len(counted) == 2 * n and set(counted.values()) == {1}
    assert gone(pid, within=10)


def test_batches_in_flight_are_bounded_in_number_and_in_bytes_though_two_always_pass() -> None:
    """in_flight_full: 16 small frames may wait for answers, but only as many wide ones as fit
    in IN_FLIGHT_BYTES (records of 300 floats make ~2.7 MB frames), and two whatever their
    size (the process encodes one while the next waits)."""
    from markov_otel.shipping.flusher import IN_FLIGHT, IN_FLIGHT_BYTES, in_flight_full

    small, wide = 55_000, 2_700_000
    assert not in_flight_full(IN_FLIGHT, IN_FLIGHT * small)
    assert in_flight_full(IN_FLIGHT + 1, (IN_FLIGHT + 1) * small)
    assert not in_flight_full(2, 2 * wide)
    assert in_flight_full(3, 3 * wide)
    assert in_flight_full(4, IN_FLIGHT_BYTES + 1) and not in_flight_full(4, IN_FLIGHT_BYTES)


@given(
    orders=st.lists(
        st.sampled_from([("a", "b"), ("b", "a"), ("a", "b", "c")]), min_size=1, max_size=40
    ),
    numbers=st.lists(
        st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.booleans()), min_size=3, max_size=3
    ),
    max_bytes=st.sampled_from([300, 2000, 4 << 20]),
)
@settings(max_examples=200, deadline=None)
def test_a_batch_encodes_to_the_same_bytes_from_its_columns_as_from_its_records(
    orders: list[tuple[str, ...]], numbers: list[Any], max_bytes: int
) -> None:
    """What the process is given (a one-shape batch's columns, no records) encodes to the
    very lines the flusher makes of the records, cut or not: a line a sender read before the
    process was dropped goes again byte for byte, under the same Idempotency-Key."""
    from markov_otel.otel.encoding import MetricsEncoder, encode_lines, layout

    values = [{key: numbers[ord(key) - ord("a")] for key in order} for order in orders]
    times = [1_700_000_000_000_000_000 + i for i in range(len(values))]
    steps = list(range(len(values)))
    grouped, split = layout(values)
    by_flusher = encode_lines(MetricsEncoder(), times, steps, values, "[]", max_bytes)
    if split is not None:
        given_columns = encode_lines(
            MetricsEncoder(), times, steps, None, "[]", max_bytes, [(split[0], 0, len(times))],
            split,
        )  # fmt: skip
        assert given_columns == by_flusher
    assert encode_lines(MetricsEncoder(), times, steps, values, "[]", max_bytes, grouped,
                        split) == by_flusher  # fmt: skip
    assert sum(points for _line, points in by_flusher) == sum(map(len, values))


def test_the_process_loads_its_package_without_letting_its_neighbours_shadow_the_stdlib(
    tmp_path: Path,
) -> None:
    """The start command loads the markov_otel package it is given by its location: a module
    lying beside that package (here a `json.py`, as site-packages or a checkout may hold one)
    does not shadow the stdlib in the process, and the package's own modules are the ones run."""
    from markov_otel.shipping.encoder_process import _START

    package = tmp_path / "root" / "markov_otel"
    (package / "shipping").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "shipping" / "__init__.py").write_text("")
    (package / "shipping" / "encoder_process.py").write_text(
        "def run():\n    import json\n    print(__file__, json.__file__)\n"
    )
    (tmp_path / "root" / "json.py").write_text("raise SystemExit('the json beside markov_otel')\n")
    done = subprocess.run(
        [sys.executable, "-c", _START, str(package)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ran, json_file = done.stdout.split()
    assert Path(ran) == package / "shipping" / "encoder_process.py"
    assert Path(json_file).parent.name != "root"


@pytest.mark.parametrize(
    ("peer", "answered"),
    [("swap", 4), ("repeat", 2)],
    ids=["batch 4 answered before batch 3", "batch 2's answer repeated for batch 3"],
)
def test_an_answer_for_another_batch_drops_the_process_and_no_batch_is_lost_or_reordered(
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    peer: str,
    answered: int,
) -> None:
    """A real process that speaks the encoder's protocol (tests/encoder_peer) answers batches 1
    and 2, then an answer for another batch where batch 3's is due: the flusher says which batch
    was answered in one line, drops the process, cuts the file back to batch 2's end and encodes
    the rest itself: every step once, in record order, and the process is gone."""
    peer_dir = Path(__file__).parent / "encoder_peer"
    paths = [str(peer_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("MARKOV_TEST_PEER", peer)
    n = 5_000
    rec = recorder("always", monkeypatch, batch_size=100)
    with rec:
        pid = encoder_pid(rec)
        for i in range(n):
            rec.add_record({"i": i})
    steps = [p.step for p in points(isolated / rec.recording_id)]
    assert steps == list(range(n))  # each once, and in record order across the lines
    said = [r.getMessage() for r in caplog.records if "encoder process ended" in r.getMessage()]
    assert len(said) == 1 and f"it answered batch {answered}" in said[0], said
    assert rec._flusher._process_dropped and gone(pid, within=10)
