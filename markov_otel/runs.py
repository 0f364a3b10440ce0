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

from markov_otel import distributed
from markov_otel.acks import Acks, SetAside
from markov_otel.config import Settings
from markov_otel.errors import ConfigError
from markov_otel.sender import Progress, Sender
from markov_otel.spool import Spool, read_json
from markov_otel.transport import Target, patch_body, registration_body

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
    for line in spool.lines("metrics"):
        try:
            data = json.loads(line.data)
        except ValueError:
            continue
        for rm in data.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    yield from _metric_points(metric, key)


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
