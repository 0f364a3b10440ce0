"""What the pages' scripts get about each run: one flat row per recording, embedded as JSON.

Hyperparameters and summary values are flattened to dotted names (`rules.flatten_params`, as
resource attributes carry them), non-finite floats become the protocol's strings, and the start
time is `started_at` when the recording has one, else `created_at`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import TERMINAL_STATUSES, flatten_params
from markov_otel.server.records import jsonable

__all__ = ["duration_seconds", "embed_json", "flat", "run_row", "start_of"]


def flat(values: dict[str, Any] | None) -> dict[str, Any]:
    """`values` flattened to dotted names, ready for JSON; never raises on odd stored data."""
    if not values:
        return {}
    try:
        flattened: dict[str, Any] = dict(flatten_params(values))
    except (ConfigError, TypeError, ValueError):
        # Two spellings of one name (a nested registration beside the dotted names batches
        # carry): flatten entry by entry, the later spelling wins.
        flattened = {}
        for key, value in values.items():
            try:
                flattened.update(flatten_params({str(key): value}))
            except (ConfigError, TypeError, ValueError):
                flattened[str(key)] = json.dumps(jsonable(value), default=str)
    return {k: _cell(v) for k, v in jsonable(flattened).items()}


def _cell(value: Any) -> Any:
    """A table cell: numbers, strings, booleans and null as they are, lists as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def start_of(recording: dict[str, Any]) -> str:
    """When the run started: `started_at` if the backend has it, else when it was registered."""
    return str(recording.get("started_at") or recording.get("created_at") or "")


def _parse(stamp: Any) -> datetime | None:
    if not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def duration_seconds(recording: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds from start to `ended_at`; to now while running; to the last update otherwise."""
    start = _parse(start_of(recording))
    end = _parse(recording.get("ended_at"))
    if end is None:
        running = recording.get("status") not in TERMINAL_STATUSES
        end = (now or datetime.now(timezone.utc)) if running else _parse(recording["updated_at"])
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def run_row(recording: dict[str, Any]) -> dict[str, Any]:
    """One row of the runs table (and one run of the comparison)."""
    return {
        "id": recording["recording_id"],
        "name": recording.get("name") or "",
        "notes": recording.get("notes") or "",
        "project": recording.get("project_id") or "",
        "status": recording.get("status") or "",
        "start": start_of(recording),
        "duration": duration_seconds(recording),
        "points": recording.get("points", 0),
        "params": flat(recording.get("hyper_parameters")),
        "summary": flat(recording.get("summary")),
        # e.g. an Optuna study's trials share metadata optuna_study: a column to filter on
        "metadata": flat(recording.get("metadata")),
    }


def embed_json(doc: Any) -> str:
    """`doc` as JSON safe inside <script type="application/json"> (no `</script>` breakout)."""
    text = json.dumps(jsonable(doc), allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
