"""`mkv` every day: id prefixes, start and duration, the sync state in words, `config list`,
requirements to stdout, `serve --help`, `sync --all`, and the progress bar of `mkv sync`."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from backend_fixture import Backend

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main

CHILD = Path(__file__).with_name("recording_child.py")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def record(run_id: str | None = None, n: int = 3, **kwargs: Any) -> ExperimentRecorder:
    """A finished OFFLINE run of n records (`recording_id=run_id` when given)."""
    if run_id:
        kwargs["recording_id"] = run_id
    recorder = ExperimentRecorder("daily", recording_mode=RecordingMode.OFFLINE, **kwargs)
    with recorder:
        for i in range(n):
            recorder.add_record({"loss": 1.0 / (i + 1)})
    return recorder


def fields(out: str) -> dict[str, str]:
    """`mkv show`'s `key  value` lines before the first section."""
    found = {}
    for line in out.splitlines():
        if line.endswith(":"):
            break
        key, _, value = line.partition(" ")
        found[key] = value.strip()
    return found


def mkv(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("mkv")
    return subprocess.run([str(script), *args], text=True, timeout=120, **kwargs)


# -- id prefixes --------------------------------------------------------------------------------


def test_show_takes_a_unique_prefix_and_names_the_candidates_of_an_ambiguous_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mkv show abc1` finds abc1…; `mkv show abc` (two match) exits 1 listing both; a prefix
    of nothing exits 1 naming it."""
    one, two = "abc1" + "0" * 28, "abc2" + "0" * 28
    record(one), record(two)
    code, out, _ = run(["show", "abc1"], capsys)
    assert code == 0 and fields(out)["recording_id"] == one
    code, out, err = run(["show", "abc"], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert one in err and two in err and "2 recordings" in err
    code, _, err = run(["show", "fff"], capsys)
    assert code == 1 and "'fff'" in err and "mkv runs" in err


def test_sync_takes_a_unique_prefix(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv sync PREFIX` syncs the one run it names, and only that one."""
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    one, two = record("abc1" + "0" * 28), record("abd2" + "0" * 28)
    code, out, _ = run(["sync", "abc"], capsys)
    assert code == 0 and f"{one.recording_id}: synced" in out
    assert [r["step"] for r in backend.records(one.recording_id, "loss")] == [0, 1, 2]
    assert backend.records(two.recording_id, "loss") == []


# -- start, duration, sync state ----------------------------------------------------------------


def test_runs_and_show_give_start_and_duration(capsys: pytest.CaptureFixture[str]) -> None:
    """The STARTED and DURATION columns and `mkv show`'s lines come from recording.json's
    started_at and ended_at, in local time."""
    recorder = record(notes=None)
    info = __import__("json").loads((recorder.run_dir / "recording.json").read_text())
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["started_at"]))
    _, out, _ = run(["runs"], capsys)
    (row,) = [line for line in out.splitlines() if line.startswith(recorder.recording_id)]
    assert started in row
    seconds = info["ended_at"] - info["started_at"]
    assert f"{seconds:.1f}s" in row.split()  # a short run: tenths of a second
    _, out, _ = run(["show", recorder.recording_id], capsys)
    shown = fields(out)
    assert shown["started"] == time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(info["started_at"])
    )
    assert shown["duration"] == f"{seconds:.1f}s"
    assert "notes" not in shown and "None" not in out


def test_show_prints_a_note_that_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    """A note that is set is printed as it is."""
    recorder = record(notes="baseline, lr sweep")
    assert fields(run(["show", recorder.recording_id], capsys)[1])["notes"] == "baseline, lr sweep"


def test_show_aligns_values_past_the_longest_key_of_a_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Keys longer than the old 24-character column (and one past SHOW_KEY_WIDTH) still leave
    every value of their section in one column, or one space after a very long key."""
    from markov_otel.cli.main import SHOW_KEY_WIDTH

    long_key, huge_key = "optimizer.param_groups.0.weight_decay", "h" * (SHOW_KEY_WIDTH + 5)
    recorder = ExperimentRecorder("wide", recording_mode=RecordingMode.OFFLINE)
    recorder.add_hyper_parameters({"lr": 0.1, long_key: 0.01})
    with recorder:
        recorder.add_record({"loss": 0.5, huge_key: 1.0})
    out = run(["show", recorder.recording_id], capsys)[1].splitlines()
    section = out[out.index("hyper_parameters:") + 1 : out.index("hyper_parameters:") + 3]
    assert [line.index("0.1") if "lr" in line else line.index("0.01") for line in section] == [
        len(f"  {long_key} ")
    ] * 2, section
    values = out[out.index("last_values:") + 1 :]
    assert f"  {huge_key} 1.0" in values
    assert f"  {'loss':{SHOW_KEY_WIDTH}} 0.5" in values


def test_a_running_run_shows_its_time_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    """A run still recording shows `running` and its elapsed time so far."""
    recorder = ExperimentRecorder("live", recording_mode=RecordingMode.OFFLINE)
    with recorder:
        recorder.add_record({"loss": 1.0})
        shown = fields(run(["show", recorder.recording_id], capsys)[1])
    assert shown["status"] == "running"
    assert shown["duration"].endswith("so far (running)")


def test_a_crashed_run_shows_what_is_known(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    """A run whose process was SIGKILLed: crashed, its start, and `at least` the time until its
    last write; `mkv runs` marks that duration with a +."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "kill9", "2000"], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().split()[1]
    assert child.stdout.readline().startswith("checkpoint")  # said once its records are on disk
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    shown = fields(run(["show", run_id], capsys)[1])
    assert shown["status"] == "crashed"
    assert shown["started"] != "-"
    assert shown["duration"].startswith("at least ")
    _, out, _ = run(["runs"], capsys)
    (row,) = [line for line in out.splitlines() if line.startswith(run_id)]
    assert re.search(r" \S+\+ ", row), row


def test_sync_state_in_words(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An offline run never synced is `local`/`local only`; after `mkv sync`, `sent`/`all sent
    to URL`; an online run that could not send says how many batches wait for which backend."""
    recorder = record()
    rid = recorder.recording_id
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    assert fields(run(["show", rid], capsys)[1])["sync"].startswith("local only")
    assert run(["runs"], capsys)[1].splitlines()[1].endswith(" local")
    assert run(["sync", rid], capsys)[0] == 0
    assert fields(run(["show", rid], capsys)[1])["sync"] == f"all sent to {backend.url}"
    assert run(["runs"], capsys)[1].splitlines()[1].endswith(" sent")
    online = ExperimentRecorder(
        "down", recording_mode=RecordingMode.ONLINE, endpoint="http://127.0.0.1:9",
        sync_data_timeout=1.0,
    )  # fmt: skip
    with online:
        online.add_record({"loss": 1.0})
    monkeypatch.setenv("MARKOV_ENDPOINT", "http://127.0.0.1:9")
    said = fields(run(["show", online.recording_id], capsys)[1])["sync"]
    assert re.fullmatch(
        rf"not yet sent to http://127.0.0.1:9: \d+ batches; `mkv sync {online.recording_id}` "
        "sends them",
        said,
    ), said


def test_a_run_sent_to_another_backend_is_not_unsent_here(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run synced whole to backend A, seen from a shell pointing at backend B: `mkv runs` says
    `sent-elsewhere` (not N-unsent), `mkv show` names A and proposes no `mkv sync` to B, and
    `mkv sync --all` leaves it alone (B stores no recording)."""
    rid = record().recording_id
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    assert run(["sync", rid, "--endpoint", backend.url], capsys)[0] == 0
    other = Backend(tmp_path / "other", token=backend.token)
    try:
        monkeypatch.setenv("MARKOV_ENDPOINT", other.url)
        row = run(["runs"], capsys)[1].splitlines()[1]
        assert row.startswith(rid) and row.endswith(" sent-elsewhere"), row
        said = fields(run(["show", rid], capsys)[1])["sync"]
        assert said == f"all sent to {backend.url}; not to {other.url}, the endpoint set here"
        code, out, _ = run(["sync", "--all"], capsys)
        assert code == 0 and f"{rid}: synced" not in out
        assert "left 1 runs sent whole to other backends" in out
        listed = subprocess.run(
            ["curl", "-sf", "-H", f"Authorization: Bearer {other.token}",
             f"{other.url}/api/v1/recordings"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stdout
        # Named, it is copied: the user asked for this backend explicitly.
        assert run(["sync", rid], capsys)[0] == 0
        assert run(["runs"], capsys)[1].splitlines()[1].endswith(" sent")
    finally:
        other.stop()


# -- config, env, serve -------------------------------------------------------------------------


def test_config_list_says_every_value_and_where_it_comes_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every key once, with its value and source: environment, config file or default; the
    API key only as <set>."""
    from markov_otel.config import FILE_KEYS

    assert run(["config", "set", "endpoint", "http://127.0.0.1:9"], capsys)[0] == 0
    assert run(["config", "set", "alert_cooldown", "30"], capsys)[0] == 0
    monkeypatch.setenv("MARKOV_API_KEY", "s3cret")
    code, out, _ = run(["config", "list"], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines()[1:]}
    assert list(rows) == list(FILE_KEYS)
    assert rows["endpoint"] == ["http://127.0.0.1:9", f"config file {tmp_path}/config/config.json"]
    assert rows["alert_cooldown"][0] == "30"
    assert rows["api_key"] == ["<set>", "environment MARKOV_API_KEY"]
    assert rows["mode"] == ["online", "default: online, as an endpoint is configured"]
    assert rows["trace_children"] == ["false", "default"]
    assert "s3cret" not in out


def test_config_get_mode_agrees_with_mkv_mode(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mkv config get mode` prints what `mkv mode` prints, whatever sets it, with the source."""
    for setup in ([], ["mode", "online"], ["config", "set", "endpoint", "http://127.0.0.1:9"]):
        if setup:
            assert run(setup, capsys)[0] == 0
        assert run(["config", "get", "mode"], capsys) == run(["mode"], capsys)
    monkeypatch.setenv("MARKOV_MODE", "offline")
    code, out, err = run(["config", "get", "mode"], capsys)
    assert (code, out, err) == (0, "offline\n", "(environment MARKOV_MODE)\n")
    assert run(["mode"], capsys) == (code, out, err)


def test_env_requirements_without_a_path_prints_to_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mkv env requirements RUN` prints requirements.txt and writes no file; with a path it
    writes that file."""
    monkeypatch.setenv("MARKOV_CAPTURE_ENVIRONMENT", "1")
    recorder = record()
    code, out, _ = run(["env", "requirements", recorder.recording_id[:8]], capsys)
    assert code == 0
    assert out == (recorder.run_dir / "requirements.txt").read_text()
    assert "markov-otel" in out or "markov_otel" in out
    assert not (tmp_path / "requirements.txt").exists()
    code, out, _ = run(["env", "requirements", recorder.recording_id, "reqs.txt"], capsys)
    assert code == 0 and (tmp_path / "reqs.txt").read_text().startswith("# Environment")


def test_serve_help_shows_the_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mkv serve --help` names the default host, port and database."""
    monkeypatch.setenv("COLUMNS", "200")  # argparse would wrap markov-server.db at its hyphen
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8470)", "sqlite:///markov-server.db"):
        assert default in text


def test_sync_all_lists_only_runs_that_had_work(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv sync --all` after one run was synced sends and names only the other; once all are
    sent it says there is nothing to sync."""
    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    done, todo = record(), record()
    assert run(["sync", done.recording_id], capsys)[0] == 0
    code, out, _ = run(["sync", "--all"], capsys)
    assert code == 0
    assert todo.recording_id in out and done.recording_id not in out
    code, out, _ = run(["sync", "--all"], capsys)
    assert code == 0 and out.startswith("nothing to sync") and out.count("\n") == 1


# -- progress -----------------------------------------------------------------------------------


@pytest.fixture
def big_run(backend: Backend) -> tuple[str, dict[str, str]]:
    """A run of 400 batches, and the environment that points `mkv sync` at the backend."""
    recorder = ExperimentRecorder(
        "big", recording_mode=RecordingMode.OFFLINE, batch_size=50, batch_processing_interval=10
    )
    with recorder:
        for i in range(20_000):
            recorder.add_record({"loss": 1.0 / (i + 1), "acc": i / 20_000})
    env = {**os.environ, "MARKOV_ENDPOINT": backend.url, "MARKOV_API_KEY": backend.token}
    return recorder.recording_id, env


@pytest.mark.slow
def test_sync_draws_a_progress_bar_on_a_terminal(big_run: tuple[str, dict[str, str]]) -> None:
    """On a terminal (a pty), `mkv sync` redraws one line with %, bytes, batches, rate, ETA,
    ending at 100%."""
    run_id, env = big_run
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [str(Path(sys.executable).with_name("mkv")), "sync", run_id],
        stdin=follower, stdout=subprocess.PIPE, stderr=follower, env=env, text=True,
    )  # fmt: skip
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, "mkv sync drew nothing for 60 s"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    out = child.communicate(timeout=60)[0]
    assert child.returncode == 0 and f"{run_id}: synced" in out
    frames = [f for f in drawn.decode().split("\r") if f.strip()]  # the tty's \r\n at the end
    assert len(frames) >= 2, drawn  # redrawn as it went, then at 100%
    assert all("batches" in f and "/s" in f and "ETA" in f for f in frames)
    assert re.search(r"100%.* 4\d\d/4\d\d batches", frames[-1]), frames[-1]
    assert drawn.decode().rstrip().endswith(frames[-1].rstrip())


def test_sync_is_quiet_in_a_pipe(big_run: tuple[str, dict[str, str]]) -> None:
    """In a pipe, `mkv sync` draws no bar: one line on stdout, nothing on stderr."""
    run_id, env = big_run
    result = mkv(["sync", run_id], env=env, capture_output=True)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1 and f"{run_id}: synced" in result.stdout
