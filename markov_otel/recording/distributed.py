"""Distributed training: all ranks of a job (torchrun, or any launcher that sets RANK and
WORLD_SIZE) write into one recording.

- A job is distributed when `WORLD_SIZE` > 1 and `RANK` is set (`LOCAL_RANK` too, by torchrun).
- The recording id, the same in every rank: `recording_id=` if given, else
  `MARKOV_RECORDING_ID`, else derived from the launcher's run id (`TORCHELASTIC_RUN_ID`, unique
  per torchrun job) and the recording name, all without any talk between the ranks. torchrun
  without `--rdzv-id` (run id "none") has none of these: there the ranks agree on one id in the
  job's own store (`TORCHELASTIC_USE_AGENT_STORE`, at MASTER_ADDR:MASTER_PORT). With none of
  them (a launcher without a run id or store) each rank records on its own, as in a single
  process, and says so, naming `--rdzv-id`.
- Each rank writes its own run dir, with its own writer id: rank 0 `$MARKOV_DIR/<recording_id>/`,
  rank N `$MARKOV_DIR/<recording_id>.rank<N>/`; `mkv sync --all` sends them all.
- add_record values are recorded on rank 0 only (`ranks="0"`, the default); with `ranks="all"`
  every rank records them, each key tagged with its rank (`loss/rank.1`, attribute `markov.rank`).
  System metrics are recorded on every rank, tagged likewise; the rank's host is `host.name` on
  its resource and its span.
- Rank 0 owns the recording: it registers it and PATCHes hyperparameters, summary, environment and
  the final status. The other ranks only send their lines, and their batches carry no status,
  summary or hyperparameters, so a rank that ends first never finishes the recording. A rank
  that fails does fail it: its metadata gets `failed_rank` and `failed_error`, and a rank N > 0
  PATCHes that with the status `failed`, which the backend keeps against the other ranks' ends
  (`rules.next_status`).
- Traces: rank 0 opens the experiment span with ids derived from the recording id (and the
  launcher's restart count), so every rank can open its child span `rank <N>` under it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from markov_otel.errors import ConfigError
from markov_otel.rules import ID_PATTERN
from markov_otel.shipping.spool import check_run_id
from markov_otel.shipping.transport import Target

log = logging.getLogger("markov_otel")

ENV_RECORDING_ID = "MARKOV_RECORDING_ID"
"""The recording every rank of a distributed job writes into (any launcher)."""
ENV_RUN_ID = "TORCHELASTIC_RUN_ID"
"""torchrun's job id (`--rdzv-id`, a fresh uuid for single-node jobs); "none" means unset."""
ENV_AGENT_STORE = "TORCHELASTIC_USE_AGENT_STORE"
"""torchrun: "True" when MASTER_ADDR:MASTER_PORT is the job's store, served by its agent."""
STORE_TIMEOUT = 30.0
"""Seconds to reach the job's store (it is up before torchrun starts any rank)."""
_NAMESPACE = uuid.UUID("5f0c3a52-6f1e-4b8e-9d0a-6d61726b6f76")  # uuid5 namespace of our ids
_OWNER_ONLY = ("status", "summary", "hyper_parameters")
"""Recording fields only rank 0 sends (the backend merges every batch's resource into them)."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a distributed job."""

    rank: int
    world_size: int
    local_rank: int
    restart: int  # TORCHELASTIC_RESTART_COUNT: a restarted job gets fresh span ids
    records_values: bool  # add_record values are recorded on this rank
    tag_rank: bool  # ranks="all": every key carries the rank
    host: str = dataclasses.field(default_factory=socket.gethostname)

    @property
    def owner(self) -> bool:
        """Rank 0: registers the recording and sends its status."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """recording.json's "distributed" entry (and the resource's `markov.rank` …)."""
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "local_rank": self.local_rank,
            "host": self.host,
            "ranks": "all" if self.tag_rank else "0",
        }


def from_environment(
    name: str, recording_id: str | None, ranks: str, environ: Mapping[str, str] = os.environ
) -> tuple[Launch | None, str | None]:
    """(the launch, or None in a single process; the shared recording id, or None for a
    fresh one)."""
    place = _place(environ)
    if place is None:
        return None, recording_id
    rank, world_size, local_rank = place
    shared = recording_id or _shared_id(name, environ)
    if shared is None:
        log.warning(
            "markov_otel: rank %d of %d has no recording id shared with the other ranks, so "
            "each rank records on its own. Set %s to one id for every rank, or give torchrun "
            "a job id: torchrun --rdzv-id=<job id> (or --standalone)",
            rank, world_size, ENV_RECORDING_ID,
        )  # fmt: skip
        return None, None
    launch = Launch(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        restart=_int(environ, "TORCHELASTIC_RESTART_COUNT", 0),
        records_values=rank == 0 or ranks == "all",
        tag_rank=ranks == "all",
    )
    return launch, check_run_id(shared)


def _place(environ: Mapping[str, str]) -> tuple[int, int, int] | None:
    if "RANK" not in environ or _int(environ, "WORLD_SIZE", 1) <= 1:
        return None
    rank, world_size = _int(environ, "RANK", 0), _int(environ, "WORLD_SIZE", 1)
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"RANK={rank} is outside 0..WORLD_SIZE-1={world_size - 1}; the launcher's "
            "environment is inconsistent"
        )
    return rank, world_size, _int(environ, "LOCAL_RANK", rank)


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} must be an integer (set by the launcher)") from None


def _shared_id(name: str, environ: Mapping[str, str]) -> str | None:
    explicit = environ.get(ENV_RECORDING_ID, "").strip()
    if explicit:
        return explicit
    run_id = environ.get(ENV_RUN_ID, "").strip()
    if run_id and run_id != "none":
        return uuid.uuid5(_NAMESPACE, f"{run_id}/{name}").hex
    if environ.get(ENV_AGENT_STORE) == "True":  # torchrun without --rdzv-id: ask the job
        return _agreed_in_job_store(name, environ)
    return None


def _agreed_in_job_store(name: str, environ: Mapping[str, str]) -> str | None:
    """The recording id the ranks agree on in the job's own store: torchrun's agent serves a
    TCPStore at MASTER_ADDR:MASTER_PORT for the whole job (and keeps it across restarts, so a
    restarted job goes on). Every rank proposes a fresh id; the first proposal stored wins, so
    two jobs, each with its own store, never share one. None if the store cannot be reached."""
    try:
        from torch.distributed import TCPStore  # torchrun launched us: torch is there
    except ImportError:
        return None
    try:
        store = TCPStore(
            environ.get("MASTER_ADDR", "127.0.0.1"),
            _int(environ, "MASTER_PORT", 0),
            is_master=False,
            timeout=timedelta(seconds=STORE_TIMEOUT),
        )
        agreed = store.compare_set(f"markov_otel/recording/{name}", "", uuid.uuid4().hex)
    except (RuntimeError, ValueError, OSError) as exc:  # torch's DistStoreError is a RuntimeError
        log.debug("markov_otel: the job's store at MASTER_ADDR:MASTER_PORT: %s", exc)
        return None
    return bytes(agreed).decode()


def run_dir_name(recording_id: str, launch: Launch | None) -> str:
    """Rank 0 (or a single process): the recording id; rank N: `<recording_id>.rank<N>`."""
    if launch is None or launch.rank == 0:
        return recording_id
    name = f"{recording_id}.rank{launch.rank}"
    if len(name) > 64:
        raise ConfigError(
            f"recording id {recording_id!r} is too long for a distributed job: rank "
            f"{launch.rank} writes to {name!r}, past the 64 characters of {ID_PATTERN}; use an "
            f"id of at most {64 - len(name) + len(recording_id)} characters"
        )
    return check_run_id(name)


def model_id(recording_id: str) -> str:
    """The same model id in every rank, whichever rank's batch reaches the backend first."""
    return f"model-{uuid.uuid5(_NAMESPACE, f'model/{recording_id}').hex[:16]}"


def resource_info(info: Mapping[str, Any], launch: Launch | None) -> Mapping[str, Any]:
    """What this rank's resources are built from: all of `info` on rank 0, no owner-only
    fields on the others."""
    if launch is None or launch.owner:
        return info
    return {k: v for k, v in info.items() if k not in _OWNER_ONLY}


def owns_recording(info: Mapping[str, Any]) -> bool:
    """A run dir that may register and PATCH its recording (not a rank N > 0 of a job)."""
    place = info.get("distributed")
    return not isinstance(place, Mapping) or place.get("rank", 0) == 0


def markov_target(target: Target, info: Mapping[str, Any]) -> Target:
    """The backend target of a run dir: a rank N > 0 sends lines only."""
    return target if owns_recording(info) else dataclasses.replace(target, registers=False)


class _JobIds(IdGenerator):
    """Rank 0's ids: every trace is the job's, and the first span (the experiment span) has the
    id the other ranks derive as their parent."""

    def __init__(self, trace_id: int, first_span_id: int) -> None:
        self._trace_id, self._first, self._random = trace_id, first_span_id, RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        first, self._first = self._first, 0
        return first or self._random.generate_span_id()


def _job_ids(recording_id: str, launch: Launch) -> tuple[int, int]:
    digest = hashlib.sha256(f"{recording_id}:{launch.restart}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def id_generator(recording_id: str, launch: Launch | None) -> IdGenerator | None:
    """Rank 0's span ids (None: the SDK's random ones)."""
    if launch is None or not launch.owner:
        return None
    return _JobIds(*_job_ids(recording_id, launch))


class RunSpans:
    """The experiment span and, in a distributed job, this rank's child span under it."""

    def __init__(self, tracer: Tracer, name: str, recording_id: str, launch: Launch | None):
        self._ended: list[Span] = []
        if launch is None:
            self.main = tracer.start_span(f"experiment {name}")
            self._ended = [self.main]
            return
        attributes: dict[str, str | int] = {
            "markov.rank": launch.rank,
            "markov.world_size": launch.world_size,
            "markov.local_rank": launch.local_rank,
            "host.name": launch.host,
            "process.pid": os.getpid(),
        }
        if launch.owner:  # its first span: the id the other ranks derive
            experiment = tracer.start_span(f"experiment {name}")
            parent = trace.set_span_in_context(experiment)
        else:
            trace_id, span_id = _job_ids(recording_id, launch)
            remote = SpanContext(trace_id, span_id, True, TraceFlags(TraceFlags.SAMPLED))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        rank = tracer.start_span(f"rank {launch.rank}", context=parent, attributes=attributes)
        self.main = experiment if launch.owner else rank  # lifecycle and alert events go here
        self._ended = [rank, experiment] if launch.owner else [rank]

    def end(self, status: Any) -> None:
        """End the rank span, then the experiment span, both with `status`."""
        for span in self._ended:
            span.set_status(status)
            span.end()
