"""Distributed training: the ranks of one job write one recording (rank 0 owns it), each from its
own run dir; system metrics of every rank, tagged with the rank; one child span per rank."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from otlp_files import attributed_points as wire_points
from otlp_files import attributes, resources, spans
from test_system_metrics import DEFAULT_KEYS

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.recording.distributed import Launch, from_environment, run_dir_name

HERE = Path(__file__).resolve().parent
TORCHRUN = {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "job-1234"}
SYSTEM = {"MARKOV_SYSTEM_METRICS": "1", "MARKOV_SYSTEM_METRICS_INTERVAL": "0.1"}


# -- the rank logic, from the launcher's variables ----------------------------------------------


def test_ranks_of_one_job_share_a_recording_id_derived_from_the_run_id() -> None:
    """Same torchrun job and name: one id on every rank; another job or name: another id."""
    ids = {from_environment("net", None, "0", {**TORCHRUN, "RANK": str(r)})[1] for r in (0, 1)}
    assert len(ids) == 1
    (shared,) = ids
    assert len(str(shared)) == 32
    other_job = {**TORCHRUN, "RANK": "0", "TORCHELASTIC_RUN_ID": "job-9"}
    assert from_environment("net", None, "0", other_job)[1] != shared
    assert from_environment("other", None, "0", {**TORCHRUN, "RANK": "0"})[1] != shared


def test_an_explicit_id_wins_over_the_environment_which_wins_over_the_run_id() -> None:
    """recording_id= > MARKOV_RECORDING_ID > TORCHELASTIC_RUN_ID."""
    env = {**TORCHRUN, "RANK": "1", "MARKOV_RECORDING_ID": "shared-run"}
    assert from_environment("net", None, "0", env)[1] == "shared-run"
    assert from_environment("net", "given", "0", env)[1] == "given"


def test_who_records_values_and_where() -> None:
    """ranks="0": values on rank 0 only; "all": every rank, tagged. Rank N's run dir is
    <id>.rank<N>; rank 0's is the id itself."""
    rank1, rid = from_environment("net", None, "0", {**TORCHRUN, "RANK": "1", "LOCAL_RANK": "1"})
    assert rank1 is not None and rid is not None
    assert (rank1.rank, rank1.world_size, rank1.local_rank, rank1.owner) == (1, 2, 1, False)
    assert (rank1.records_values, rank1.tag_rank) == (False, False)
    rank0 = from_environment("net", None, "0", {**TORCHRUN, "RANK": "0"})[0]
    assert rank0 is not None and rank0.records_values and rank0.owner
    every = from_environment("net", None, "all", {**TORCHRUN, "RANK": "1"})[0]
    assert every is not None and every.records_values and every.tag_rank
    assert run_dir_name(rid, rank0) == rid
    assert run_dir_name(rid, rank1) == f"{rid}.rank1"


@pytest.mark.parametrize("env", [{}, {"WORLD_SIZE": "1", "RANK": "0"}, {"WORLD_SIZE": "4"}])
def test_a_single_process_is_not_a_job(env: dict[str, str]) -> None:
    """No launcher, WORLD_SIZE=1, or no RANK: no launch, the given id unchanged."""
    assert from_environment("net", "given", "0", env) == (None, "given")


def test_a_job_without_a_shared_id_records_per_rank_and_says_how_to_share(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """torchrun's unset run id ("none"), no job store to agree through and no
    MARKOV_RECORDING_ID: each rank records on its own, with one warning naming
    MARKOV_RECORDING_ID and torchrun's --rdzv-id."""
    env = {**TORCHRUN, "RANK": "1", "TORCHELASTIC_RUN_ID": "none"}
    with caplog.at_level(logging.WARNING, logger="markov_otel"):
        assert from_environment("net", None, "0", env) == (None, None)
    (warning,) = caplog.records
    assert "MARKOV_RECORDING_ID" in warning.getMessage()
    assert "--rdzv-id" in warning.getMessage()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**TORCHRUN, "RANK": "2"}, "RANK"),
        ({**TORCHRUN, "RANK": "one"}, "RANK"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE"),
        ({**TORCHRUN, "RANK": "0", "MARKOV_RECORDING_ID": "../x"}, "recording id"),
    ],
)
def test_an_inconsistent_launcher_environment_is_refused(env: dict[str, str], named: str) -> None:
    """A rank outside the world, a non-integer, a bad shared id: a ConfigError naming it."""
    with pytest.raises(ConfigError, match=named):
        from_environment("net", None, "0", env)


def test_an_id_too_long_for_the_rank_suffix_is_refused() -> None:
    """A 64-character id leaves no room for `.rank1`: the error says how long it may be."""
    launch = Launch(rank=1, world_size=2, local_rank=1, restart=0, records_values=False,
                    tag_rank=False)  # fmt: skip
    with pytest.raises(ConfigError, match="at most 58 characters"):
        run_dir_name("a" * 64, launch)


# -- two ranks as two real processes ------------------------------------------------------------


def run_ranks(isolated: Path, extra: dict[str, str], ranks: int = 2) -> list[dict[str, str]]:
    """Start rank_child.py once per rank, at the same time; each one's printed `key value`s."""
    children = []
    for rank in range(ranks):
        env = {**os.environ, **TORCHRUN, **SYSTEM, **extra}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks))
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
        children.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "rank_child.py")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    said = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        said.append(dict(line.split(" ", 1) for line in out.splitlines()))
    return said


@pytest.mark.slow
def test_two_ranks_write_one_recording_from_two_run_dirs(
    isolated: Path, backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, then `mkv sync`: one recording; `loss` from rank 0 only, each step once; both
    ranks' system metrics under /rank.N; rank 1's failure, summary and lr never reach it; rank
    1's span is a child of rank 0's experiment span. A second sync stores nothing more."""
    rank0, rank1 = run_ranks(isolated, {"MARKOV_MODE": "offline", "FAIL_ON_RANK": "1"})
    rid = rank0["recording"]
    assert rank1["recording"] == rid
    dir0, dir1 = Path(rank0["dir"]), Path(rank1["dir"])
    assert (dir0, dir1) == (isolated / rid, isolated / f"{rid}.rank1")
    assert "rank 1 fails on purpose" in rank1["failed:"]

    keys0 = Counter(p["key"] for p in wire_points(dir0))
    keys1 = Counter(p["key"] for p in wire_points(dir1))
    assert keys0["loss"] == 5
    assert set(keys0) == {"loss"} | {f"{k}/rank.0" for k in DEFAULT_KEYS}
    assert set(keys1) == {f"{k}/rank.1" for k in DEFAULT_KEYS}
    for resource in resources(dir1):
        assert resource["markov.rank"] == 1 and resource["host.name"]
        assert not [
            k
            for k in resource
            if k.startswith(("markov.status", "markov.hparam", "markov.summary"))
        ]
    assert json.loads((dir1 / "recording.json").read_text())["status"] == "failed"

    (experiment,) = [s for s in spans(dir0) if s.name == "experiment ranked"]
    (span0,) = [s for s in spans(dir0) if s.name == "rank 0"]
    (span1,) = [s for s in spans(dir1) if s.name == "rank 1"]
    assert span0.parent_span_id == span1.parent_span_id == experiment.span_id
    assert span0.trace_id == span1.trace_id == experiment.trace_id
    assert attributes(span1.attributes)["markov.rank"] == 1

    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    assert main(["sync", rid, f"{rid}.rank1"]) == 0
    assert_one_recording(backend, rid, keys0 + keys1)
    assert main(["sync", "--all"]) == 0
    assert_one_recording(backend, rid, keys0 + keys1)


def assert_one_recording(backend: Any, rid: str, on_disk: Counter[str]) -> None:
    """The backend holds exactly the points on disk, in one finished recording of rank 0's."""
    recording = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    assert recording["status"] == "finished"
    assert recording["hyper_parameters"] == {"lr": 0.1}
    assert recording["summary"] == {"rank": 0}
    assert recording["points"] == sum(on_disk.values())
    assert set(recording["keys"]) == set(on_disk)
    assert [p["step"] for p in backend.records(rid, "loss")] == [0, 1, 2, 3, 4]
    for key, count in on_disk.items():
        assert len(backend.records(rid, key)) == count, key


@pytest.mark.slow
def test_ranks_all_tags_every_rank_online(isolated: Path, backend: Any) -> None:
    """ranks=all, ONLINE: each rank's `loss` under loss/rank.N, each step once, no plain `loss`;
    the recording is still rank 0's (its lr)."""
    env = {"MARKOV_MODE": "online", "MARKOV_ENDPOINT": backend.url, "MARKOV_API_KEY": backend.token}
    rank0, rank1 = run_ranks(isolated, {**env, "MARKOV_RANKS": "all"})
    rid = rank0["recording"]
    assert rank1["recording"] == rid
    recording = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    assert "loss" not in recording["keys"]
    for rank in (0, 1):
        assert [p["step"] for p in backend.records(rid, f"loss/rank.{rank}")] == [0, 1, 2, 3, 4]
        assert {f"{k}/rank.{rank}" for k in DEFAULT_KEYS} <= set(recording["keys"])
    assert recording["hyper_parameters"] == {"lr": 0.1}
    on_disk = sum(len(wire_points(Path(r["dir"]))) for r in (rank0, rank1))
    assert recording["points"] == on_disk


def test_a_rank_that_records_no_values_still_checks_its_state(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On rank 1 (ranks="0") add_record keeps nothing, but before start() it raises as usual."""
    for name, value in {**TORCHRUN, "RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    recorder = ExperimentRecorder("net", recording_mode=RecordingMode.OFFLINE)
    with pytest.raises(Exception, match="before start"):
        recorder.add_record({"loss": 1.0})
    with recorder:
        recorder.add_record({"loss": 1.0})
    assert wire_points(recorder.run_dir) == []
    assert recorder.run_dir.name == f"{recorder.recording_id}.rank1"


# -- a real DDP job under torchrun --------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_ddp_job_records_one_recording_online(isolated: Path, backend: Any) -> None:
    """torchrun --nproc_per_node=2, gloo on CPU, a real DDP loop, ONLINE: one finished recording;
    `loss` of rank 0 complete (steps 0..19, once each); both ranks' system metrics; the
    backend's points are exactly those of the two run dirs."""
    pytest.importorskip("torch")
    env = {
        **os.environ,
        **SYSTEM,
        "MARKOV_MODE": "online",
        "MARKOV_ENDPOINT": backend.url,
        "MARKOV_API_KEY": backend.token,
        "OMP_NUM_THREADS": "1",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         str(HERE / "ddp_child.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line.split(" ") for line in done.stdout.splitlines()]
    (rid,) = [words[1] for words in said if words[0] == "recording"]
    dirs = sorted(Path(words[3]) for words in said if words[0] == "rank")
    assert dirs == [isolated / rid, isolated / f"{rid}.rank1"]
    recording = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    assert recording["status"] == "finished"
    assert [p["step"] for p in backend.records(rid, "loss")] == list(range(20))
    for rank in (0, 1):
        for key in DEFAULT_KEYS:
            assert backend.records(rid, f"{key}/rank.{rank}"), (key, rank)
    assert recording["points"] == sum(len(wire_points(d)) for d in dirs)
    print(f"torchrun job: {time.monotonic() - started:.1f} s")


def torchrun_job(script: str, extra: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    """`torchrun --nproc_per_node=2 <flags> <script>` with this tree's markov_otel, started."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *flags]
    return subprocess.Popen(
        [*args, str(HERE / script)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def said(job: subprocess.Popen[str]) -> tuple[int, list[list[str]], str]:
    """(exit code, each stdout line's words, stderr) of a finished torchrun job."""
    out, err = job.communicate(timeout=110)
    return job.returncode, [line.split(" ") for line in out.splitlines()], err


@pytest.mark.slow
def test_torchrun_c10d_without_rdzv_id_agrees_on_one_recording_per_job(isolated: Path) -> None:
    """Two torchrun jobs at once, c10d rendezvous, no --rdzv-id (run id "none"): the two ranks
    of each job agree on one recording through the job's store, the jobs get two, only rank 0
    records `loss`, and nobody warns of a missing shared id."""
    pytest.importorskip("torch")
    c10d = ("--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "--nnodes=1")
    jobs = [torchrun_job("rank_child.py", {"MARKOV_MODE": "offline"}, *c10d) for _ in range(2)]
    ids = []
    for job in jobs:
        code, lines, err = said(job)
        assert code == 0, err[-3000:]
        assert "no recording id shared" not in err
        (rid,) = {words[1] for words in lines if words[0] == "recording"}
        assert sum(words[0] == "recording" for words in lines) == 2  # printed by both ranks
        ids.append(rid)
        keys0 = Counter(p["key"] for p in wire_points(isolated / rid))
        assert keys0["loss"] == 5
        assert wire_points(isolated / f"{rid}.rank1") == []  # rank 1 records no values
    assert len(set(ids)) == 2
    assert sorted(p.name for p in isolated.iterdir()) == sorted(
        [*ids, *(f"{rid}.rank1" for rid in ids)]
    )


@pytest.mark.parametrize("failing", [0, 1])
@pytest.mark.slow
def test_a_failed_rank_marks_the_recording_failed_and_names_itself(
    isolated: Path, backend: Any, failing: int
) -> None:
    """ONLINE, one rank raises while the other finishes (in either order): the recording ends
    `failed`, its metadata names the rank and its error, and values stay rank 0's."""
    env = {"MARKOV_MODE": "online", "MARKOV_ENDPOINT": backend.url, "MARKOV_API_KEY": backend.token}
    rank0, rank1 = run_ranks(isolated, {**env, "FAIL_ON_RANK": str(failing)})
    rid = rank0["recording"]
    assert rank1["recording"] == rid
    recording = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    assert recording["status"] == "failed"
    assert recording["metadata"]["failed_rank"] == failing
    assert recording["metadata"]["failed_error"] == f"RuntimeError: rank {failing} fails on purpose"
    assert recording["hyper_parameters"] == {"lr": 0.1}
    assert [p["step"] for p in backend.records(rid, "loss")] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_rank_crashing_under_torchrun_fails_the_recording_and_names_itself(
    isolated: Path, backend: Any
) -> None:
    """torchrun, rank 1 dies of an exception (torchrun exits 1, ending the other rank): the
    one recording is failed, its metadata names rank 1 and its error."""
    pytest.importorskip("torch")
    env = {"MARKOV_MODE": "online", "MARKOV_ENDPOINT": backend.url, "MARKOV_API_KEY": backend.token}
    job = torchrun_job("rank_child.py", {**env, "CRASH_ON_RANK": "1"}, "--standalone")
    code, lines, err = said(job)
    assert code != 0 and "rank 1 crashes" in err
    (rid,) = {words[1] for words in lines if words[0] == "recording"}
    recording = requests.get(
        f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers, timeout=30
    ).json()
    assert recording["status"] == "failed"
    assert recording["metadata"]["failed_rank"] == 1
    assert recording["metadata"]["failed_error"] == "ValueError: rank 1 crashes"
