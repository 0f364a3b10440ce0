"""Step buckets of a series at a few fixed widths, and the plan that reads them instead of points.

A bucket of width `w` holds, for the points of one (recording, key) whose step is in
`[k*w, (k+1)*w)`: the finite point with the smallest value, the one with the largest value, the
first non-finite point, and the count. Buckets are kept up to date at ingest (from the batch in
hand) at the widths of `LEVELS`, so a chart of a million points reads a few thousand bucket rows
instead of a million points, and a spike is never averaged away: it is some bucket's max.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from markov_otel.server.points import SeriesPoints

__all__ = ["LEVELS", "Plan", "bucket_points", "fold_series", "plan"]

# Each level is 16x the one below: a read touches at most ~16 bucket rows per output bucket.
LEVELS = (16, 256, 4096, 65536)

# One bucket, as a list so that folding points in stays cheap on the ingest path:
# [min_step, min_value, min_time, max_step, max_value, max_time, odd_step, odd_text, odd_time, n]
Bucket = list[Any]
BucketKey = tuple[int, int, int]  # (series_id, width, bucket index)
_VALUE = itemgetter(2)


def bucket_points(rows: Iterable[tuple[Any, ...]]) -> dict[BucketKey, Bucket]:
    """The buckets at every level of `rows` = (series_id, step, value, text, time)."""
    level: dict[BucketKey, Bucket] = {}
    for _ in fold_runs(rows, level):
        pass
    return upper_levels(level)


def fold_runs(
    rows: Iterable[tuple[Any, ...]], level: dict[BucketKey, Bucket]
) -> Iterator[tuple[Any, ...]]:
    """`rows`, passed on as they stream by (to an insert), folded into the finest buckets."""
    first = LEVELS[0]
    # A batch holds each key's points in step order: fold runs of one bucket at C speed.
    for bucket_key, group in groupby(rows, key=lambda r: (r[0], first, r[1] // first)):
        run = list(group)
        merge_into(level, bucket_key, _fold_run(run))
        yield from run


def fold_series(series: SeriesPoints, series_id: int, level: dict[BucketKey, Bucket]) -> None:
    """Fold a batch's series (numbered `series_id`) into the finest buckets. Finite values
    with steps in order (as a recorder writes them): a bucket is a slice of the columns, folded
    by min()/max() and index(), whose first hit is the smaller step; anything else goes row by
    row."""
    if series.texts is not None or not series.ascending():
        for _ in fold_runs(series.rows(series_id), level):
            pass
        return
    width = LEVELS[0]
    steps, values, times = series.steps, series.values, series.times
    start, end = 0, len(steps)
    while start < end:
        index = steps[start] // width
        stop = bisect_left(steps, (index + 1) * width, start, end)
        run: list[Any] = values[start:stop]  # no None: every value is finite
        lo, hi = min(run), max(run)
        a, b = start + run.index(lo), start + run.index(hi)
        bucket = [steps[a], lo, times[a], steps[b], hi, times[b], None, None, None, stop - start]
        merge_into(level, (series_id, width, index), bucket)
        start = stop


def upper_levels(level: dict[BucketKey, Bucket]) -> dict[BucketKey, Bucket]:
    """The finest buckets and every coarser level folded from them."""
    out = dict(level)
    for below, width in itertools.pairwise(LEVELS):
        above: dict[BucketKey, Bucket] = {}
        for (series_id, _, index), bucket in level.items():
            merge_into(above, (series_id, width, index // (width // below)), bucket)
        out.update(above)
        level = above
    return out


def _fold_run(group: list[tuple[Any, ...]]) -> Bucket:
    """One bucket of points that share it; of equal values the first one wins (min() and
    max() keep the first), which is the smaller step as batches and backfills come by step."""
    finite = [r for r in group if r[3] is None]
    out: Bucket = [None] * 9 + [len(group)]
    if finite:
        lo = min(finite, key=_VALUE)
        hi = max(finite, key=_VALUE)
        out[0:6] = [lo[1], lo[2], lo[4], hi[1], hi[2], hi[4]]
    if len(finite) < len(group):
        odd = min((r for r in group if r[3] is not None), key=lambda r: r[1])
        out[6:9] = [odd[1], odd[3], odd[4]]
    return out


def merge_into(out: dict[BucketKey, Bucket], key: BucketKey, bucket: Bucket) -> None:
    """Fold `bucket` into `out[key]` (a copy of it if `key` is new)."""
    found = out.get(key)
    if found is None:
        out[key] = list(bucket)
        return
    if bucket[0] is not None:
        _fold_finite(found, *bucket[:6])
    if bucket[6] is not None:
        _fold_odd(found, *bucket[6:9])
    found[9] += bucket[9]


def _fold_finite(
    b: Bucket, lo_step: int, lo: Any, lo_ns: int, hi_step: int, hi: Any, hi_ns: int
) -> None:
    # Ties go to the smaller step, so ingest order never changes which point a bucket keeps.
    if b[1] is None or lo < b[1] or (lo == b[1] and lo_step < b[0]):
        b[0], b[1], b[2] = lo_step, lo, lo_ns
    if b[4] is None or hi > b[4] or (hi == b[4] and hi_step < b[3]):
        b[3], b[4], b[5] = hi_step, hi, hi_ns


def _fold_odd(b: Bucket, step: int, text: str, time_ns: int) -> None:
    if b[6] is None or step < b[6]:
        b[6], b[7], b[8] = step, text, time_ns


@dataclass(frozen=True)
class Plan:
    """How to read the steps `[lo, hi]` in output buckets of `width` steps starting at `base`.

    `level` is the bucket width read for the whole buckets `first..last` (None: points only);
    `raw` are the step ranges read from the points (the range's ragged edges, or all of it).
    """

    width: int
    base: int
    level: int | None
    first: int
    last: int
    raw: tuple[tuple[int, int], ...]


def plan(lo: int, hi: int, buckets: int) -> Plan:
    """The cheapest read of `[lo, hi]` in at most `buckets + 1` output buckets."""
    desired = max(1, -(-(hi - lo + 1) // max(1, buckets)))
    level = max((w for w in LEVELS if w <= desired), default=None)
    if level is None:
        return Plan(desired, lo - lo % desired, None, 0, -1, ((lo, hi),))
    width = -(-desired // level) * level  # a multiple of level: whole buckets nest in outputs
    first, last = -(-lo // level), (hi + 1) // level - 1
    if first > last:
        return Plan(width, lo - lo % width, None, 0, -1, ((lo, hi),))
    raw = []
    if lo < first * level:
        raw.append((lo, first * level - 1))
    if (last + 1) * level <= hi:
        raw.append(((last + 1) * level, hi))
    return Plan(width, lo - lo % width, level, first, last, tuple(raw))
