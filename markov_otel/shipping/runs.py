"""Recorded runs on disk: listing, status (crash detection), reading points back, and sync.

What `mkv runs`, `mkv show` and `mkv sync` stand on; the recorder never imports it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markov_otel.config import Settings
from markov_otel.errors import ConfigError
from markov_otel.recording import distributed
from markov_otel.shipping.acks import Acks, SetAside, complete_backends
from markov_otel.shipping.sender import Progress, Sender
from markov_otel.shipping.spool import SIGNALS, Spool, check_run_id, read_json
from markov_otel.shipping.transport import Target, patch_body, registration_body

_SYNC_QUEUE = {"register_batch_timeout": 30.0, "batch_processing_interval": 1.0}


@dataclass(frozen=True)
class Point:
    """One recorded value read back from the spool."""

    key: str
    step: int
    value: float | int | str
    time_unix_nano: int


def run_ids(base: Path) -> list[str]:
    """Run dirs under `base` that hold a recording.json, oldest first."""
    if not base.is_dir():
        return []
    runs = [p for p in base.iterdir() if (p / "recording.json").is_file()]
    return [p.name for p in sorted(runs, key=lambda p: (p / "recording.json").stat().st_ctime)]


def open_run(base: Path, run_id: str) -> Spool:
    spool = Spool.for_run(base, run_id)
    if not (spool.dir / "recording.json").is_file():
        raise ConfigError(f"no recording {run_id!r} in {base}; list them with `mkv runs`")
    return spool


def resolve_run_id(base: Path, given: str) -> str:
    """The local run `given` names: its full id, or a unique prefix of one (as git takes a
    commit). ConfigError when none or several match, naming the candidates."""
    check_run_id(given)
    if (Path(base) / given / "recording.json").is_file():
        return given
    found = [run_id for run_id in run_ids(base) if run_id.startswith(given)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"no recording {given!r} in {base}; list them with `mkv runs`")
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise ConfigError(
        f"{given!r} is the start of {len(found)} recordings in {base} ({shown}); "
        "give more of the id"
    )


@dataclass(frozen=True)
class Timing:
    """When a run started and how long it ran, as far as its run dir knows (Unix seconds)."""

    started_at: float | None
    duration: float | None  # None: unknown (never started)
    state: str  # "ended", "running" (duration so far) or "crashed" (at least this long)


def timing(spool: Spool, info: dict[str, Any], *, now: float | None = None) -> Timing:
    """Start and duration from recording.json's started_at/ended_at; a running run's elapsed
    time; a crashed run's time until its last write to metrics.jsonl (at least that long)."""
    started, ended = info.get("started_at"), info.get("ended_at")
    if not isinstance(started, (int, float)):
        return Timing(None, None, "ended")
    if isinstance(ended, (int, float)):
        return Timing(started, max(0.0, ended - started), "ended")
    if status_of(info) == "crashed":
        try:
            last = spool.path("metrics").stat().st_mtime
        except OSError:
            return Timing(started, None, "crashed")
        return Timing(started, max(0.0, last - started), "crashed")
    return Timing(started, max(0.0, (time.time() if now is None else now) - started), "running")


@dataclass(frozen=True)
class SyncState:
    """What a backend holds of a run: lines not yet sent, lines it refused, and whether the run
    was ever sent there at all."""

    backend: str
    unsent: int
    set_aside: int
    never_sent: bool  # no line acknowledged nor set aside by this backend
    elsewhere: tuple[str, ...] = ()  # when never sent here: the backends that hold all of it


def sync_state(spool: Spool, endpoint: str | None = None) -> SyncState:
    """The state against `endpoint` (default: the backend the run recorded to). A run never
    sent there but whole on another backend names those (`elsewhere`): it is not "unsent"."""
    acks = Acks(spool, _backend(spool, endpoint))
    never = all(acks.mark(signal) == (0, 0) for signal in SIGNALS)
    aside = len(acks.set_aside_lines())
    others: tuple[str, ...] = ()
    if never and not aside:
        others = tuple(b for b in complete_backends(spool) if b != acks.backend)
    return SyncState(acks.backend, acks.unsent(), aside, never and not aside, others)


def unsent_bytes(spool: Spool, endpoint: str | None = None) -> int:
    """Bytes of the spool lines a backend has not acknowledged: what a sync will send."""
    acks = Acks(spool, _backend(spool, endpoint))
    total = 0
    for signal in SIGNALS:
        try:
            size = spool.path(signal).stat().st_size
        except OSError:
            continue
        total += max(0, size - acks.mark(signal)[1])
    return total


def status_of(info: dict[str, Any]) -> str:
    """The recorded status, or `crashed` for a run whose process died while running."""
    status = str(info.get("status", "unknown"))
    if status not in ("running", "registered"):
        return status
    if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
        return "crashed"
    return status


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def point_count(spool: Spool, info: dict[str, Any]) -> int:
    """Points of a run: recording.json's count, but counted on disk for a crashed run, whose
    recording.json is only as fresh as its last periodic save."""
    if status_of(info) != "crashed":
        return int(info.get("points", 0))
    return sum(1 for _ in points(spool))


def unsent_lines(spool: Spool, endpoint: str | None = None) -> int:
    """Spool lines a backend (default: the one the run recorded to) has not acknowledged nor
    set aside."""
    return Acks(spool, _backend(spool, endpoint)).unsent()


def set_aside(spool: Spool, endpoint: str | None = None) -> list[SetAside]:
    """Lines a backend (default: the one the run recorded to) refused, with the reasons."""
    return Acks(spool, _backend(spool, endpoint)).set_aside_lines()


def _backend(spool: Spool, endpoint: str | None) -> str:
    return endpoint or str(spool.read_recording().get("endpoint") or "")


def points(spool: Spool, key: str | None = None) -> Iterator[Point]:
    """Every point in metrics.jsonl (a torn last line is skipped), optionally of one key."""
    for batch in batches(spool, key):
        yield from batch


def batches(spool: Spool, key: str | None = None) -> Iterator[list[Point]]:
    """The points of each metrics.jsonl line (one batch: grouped by key, not by time)."""
    for line in spool.lines("metrics"):
        try:
            data = json.loads(line.data)
        except ValueError:
            continue
        yield [
            point
            for rm in data.get("resourceMetrics", [])
            for sm in rm.get("scopeMetrics", [])
            for metric in sm.get("metrics", [])
            for point in _metric_points(metric, key)
        ]


def _metric_points(metric: dict[str, Any], key: str | None) -> Iterator[Point]:
    for dp in metric.get("gauge", {}).get("dataPoints", []):
        attrs = {a["key"]: a["value"] for a in dp.get("attributes", [])}
        name = attrs.get("markov.key", {}).get("stringValue", metric["name"])
        if key is not None and name != key:
            continue
        value = dp["asDouble"] if "asDouble" in dp else int(dp["asInt"])
        step = int(attrs["markov.step"]["intValue"])
        yield Point(name, step, value, int(dp["timeUnixNano"]))


def sync_run(
    spool: Spool,
    settings: Settings,
    *,
    timeout: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    resend_set_aside: bool = False,
) -> Progress:
    """Register, send every unacked line, then PATCH the final state; safe to repeat. With
    `resend_set_aside`, lines the backend refused before are tried again."""
    info = spool.read_recording()
    status = status_of(info)
    if status != info.get("status"):
        info["status"] = status
        spool.write_recording(info)
    registration = registration_body(info)
    patch = patch_body(info)
    patch["alerts"] = list(info.get("alerts", []))
    env = read_json(spool.dir / "environment.json")
    if env:
        patch["requirements"] = env
    # a rank N > 0 of a distributed job sends its lines only; rank 0's run dir owns the recording
    sender = Sender(spool, distributed.markov_target(Target.markov(settings), info), _SYNC_QUEUE)
    deadline = None if timeout is None else time.monotonic() + timeout
    return sender.sync(
        registration,
        patch,
        deadline=deadline,
        progress=progress,
        resend_set_aside=resend_set_aside,
    )
