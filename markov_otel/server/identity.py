"""Exactly once, whatever carried a point: a batch cut down to the points the database lacks.

A point is known by its identity: recording, key, attributes (all but `markov.step` and
`markov.key`), step and time. The Idempotency-Key catches a whole body sent again; this catches
the same points by any other route (a collector replaying a run dir, `mkv sync` of the same run,
two collectors, a retry without the key, a body cut or joined differently).

Cheap for the common batch, whose points all follow what is stored: one statement a batch asks,
for every series at once, whether any stored point lies in the batch's step range; only a
series that overlaps reads those stored points (in its step and time range) and drops the
batch's points they repeat. Within the batch, a series whose steps are all distinct (one set
of ints) cannot repeat itself. The batch holds its recordings' row locks (`SqlStore._claim`),
so no other transaction, process or server adds to these series between the check and the
insert: two copies racing in are stored once. The first to arrive wins; a repeat with another
value changes nothing (docs/protocol.md, "Exactly once").

A series whose points were stored before attributes were kept (`series.attrs_unknown`, set by
the upgrade) matches a stored point without attributes to an arriving point with any.

Recorded arrays and texts are event rows (distributions.py), known the same way by
`event_identity`: a distribution by (recording, key, step, time, its other attributes), a text
by (recording, key, step, time). The digest goes in `events.identity`, which a unique index
(with the recording id) holds once: the insert skips a row it already has, in the same
transaction, whatever route carried it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from markov_otel.server.distributions import DISTRIBUTION, TEXT
from markov_otel.server.otlp import attributes_identity
from markov_otel.server.points import SeriesPoints

__all__ = ["event_identity", "unseen"]

Numbered = list[tuple[int, SeriesPoints]]
Run = Callable[[Any, str, Sequence[Any]], Any]

_SERIES_A_STATEMENT = 200  # 4 parameters each: under SQLite's oldest limit of 999
_RANGE = "(CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))"
_OVERLAPS = (
    "WITH batch (n, series_id, lo, hi) AS (VALUES {rows}) SELECT n FROM batch WHERE EXISTS"
    " (SELECT 1 FROM points WHERE points.series_id = batch.series_id"
    " AND points.step BETWEEN batch.lo AND batch.hi)"
)
_STORED = (
    "SELECT step, time_unix_nano, attrs FROM points WHERE series_id = ?"
    " AND step BETWEEN ? AND ? AND time_unix_nano BETWEEN ? AND ?"
)
# One step (a loop passing step=epoch to every record): an equality lets the index seek to the
# times too, instead of walking every point stored at that step.
_STORED_AT_STEP = (
    "SELECT step, time_unix_nano, attrs FROM points WHERE series_id = ?"
    " AND step = ? AND time_unix_nano BETWEEN ? AND ?"
)
_ATTRS_UNKNOWN = "SELECT attrs_unknown FROM series WHERE series_id = ?"


def unseen(cur: Any, run: Run, numbered: Numbered) -> Numbered:
    """The batch's (series id, points) without the points already stored and without repeats
    of a point within the batch; a series left with no point is left out."""
    merged = _one_entry_a_series(numbered)
    overlapping = _overlapping(cur, run, merged)
    out: Numbered = []
    for n, (series_id, series) in enumerate(merged):
        stored = _stored(cur, run, series_id, series) if n in overlapping else set()
        if stored or not series.distinct():
            series = series.without(stored)
        if len(series):
            out.append((series_id, series))
    return out


def _one_entry_a_series(numbered: Numbered) -> Numbered:
    """One entry per (series id, attributes): a batch may hold a series in several parts."""
    parts: dict[tuple[int, str | None], list[SeriesPoints]] = {}
    for series_id, series in numbered:
        parts.setdefault((series_id, series.attrs), []).append(series)
    if len(parts) == len(numbered):
        return numbered
    return [(sid, p[0] if len(p) == 1 else SeriesPoints.joined(p)) for (sid, _), p in parts.items()]


def _overlapping(cur: Any, run: Run, merged: Numbered) -> set[int]:
    """The indexes (in `merged`) of the series with a stored point in their step range."""
    ranges = [
        (n, series_id, *_step_range(series))
        for n, (series_id, series) in enumerate(merged)
        if len(series)
    ]
    found: set[int] = set()
    for lo in range(0, len(ranges), _SERIES_A_STATEMENT):
        chunk = ranges[lo : lo + _SERIES_A_STATEMENT]
        sql = _OVERLAPS.format(rows=", ".join([_RANGE] * len(chunk)))
        params = [value for row in chunk for value in row]
        found.update(n for (n,) in run(cur, sql, params).fetchall())
    return found


def _step_range(series: SeriesPoints) -> tuple[int, int]:
    """(lowest, highest) step: the ends of steps in order (~5 ns a point), else min and max."""
    steps = series.steps
    return (steps[0], steps[-1]) if series.ascending() else (min(steps), max(steps))


def _stored(cur: Any, run: Run, series_id: int, series: SeriesPoints) -> set[tuple[int, int]]:
    """(step, time) of the stored points of this series and attribute set that the batch's
    points could repeat (those within its step and time ranges)."""
    (lo, hi), times = _step_range(series), series.times
    if lo == hi:
        rows = run(cur, _STORED_AT_STEP, [series_id, lo, min(times), max(times)]).fetchall()
    else:
        rows = run(cur, _STORED, [series_id, lo, hi, min(times), max(times)]).fetchall()
    unknown = any(row[2] is None for row in rows) and series.attrs is not None
    if unknown:  # only asked when it could matter: a point with attributes meets one without
        unknown = bool(run(cur, _ATTRS_UNKNOWN, [series_id]).fetchone()[0])
    attrs = series.attrs
    return {(s, t) for s, t, a in rows if a == attrs or (unknown and a is None)}


# event name -> the attributes holding its key and step (as distributions.py and the logs
# endpoint store them)
_KEY_AND_STEP = {DISTRIBUTION: ("key", "step"), TEXT: ("markov.key", "markov.step")}


def event_identity(name: str, time_unix_nano: int, attrs: dict[str, Any]) -> str | None:
    """The SHA-256 (hex) of a distribution's or a text's identity within its recording: name,
    key, step, time and (a distribution's) other attributes; None for any other event (spans
    and log records are kept as they come) or one without a key and an integer step."""
    fields = _KEY_AND_STEP.get(name)
    if fields is None:
        return None
    key, step = attrs.get(fields[0]), attrs.get(fields[1])
    if not isinstance(key, str) or type(step) is not int:
        return None
    others = attrs.get("attributes") if name == DISTRIBUTION else None
    extra = attributes_identity(others) if isinstance(others, dict) and others else None
    # The key quoted (json.dumps with default options: the C encoder), so no key can imitate the
    # separators; the attributes' text last. ~4x cheaper than dumping the whole list.
    text = f"{name}|{json.dumps(key)}|{step}|{int(time_unix_nano)}|{extra or ''}"
    return hashlib.sha256(text.encode()).hexdigest()
