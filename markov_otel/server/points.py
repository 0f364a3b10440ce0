"""The points of one series in one batch as columns: what ingest hands the store.

A batch of the recorder holds a few keys with thousands of points each, so the store takes them a
series at a time, as lists (steps, values, times), and inserts, counts and buckets each list with
C loops (slice assignments into one parameter list, `struct` packing over a `map`, `min`/`max`
over slices) instead of Python code per point. The store numbers the series (`series_id`).
Non-finite values go to the text column (SQLite stores a NaN REAL as NULL); one `sum` per column
tells whether there are any.

A point is known by its identity: (recording, key, attributes, step, time). `distinct` tells in
one C pass whether a series repeats none (the recorder's never does), `without` keeps the first
point of each identity that is not already stored (docs/protocol.md, "Exactly once").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from markov_otel.server.records import non_finite_text

__all__ = ["COLUMNS_A_ROW", "PointRow", "SeriesPoints"]

# (series_id, step, value, value_text, time_unix_nano): a row of the points table
PointRow = tuple[int, int, "float | int | None", "str | None", int]
COLUMNS_A_ROW = 5


@dataclass(slots=True)
class SeriesPoints:
    """Points of one (recording, key); point i is index i of each list."""

    recording_id: str
    key: str
    steps: list[int]
    values: list[float | int | None]
    """None where `texts` holds the point's non-finite value."""
    times: list[int]
    texts: list[str | None] | None = None
    """"NaN", "Infinity" or "-Infinity" where the value is not finite; None when all are."""
    attrs: str | None = None
    """The points' other attributes (`otlp.attributes_identity`); None when they have none."""

    @classmethod
    def of(
        cls,
        recording_id: str,
        key: str,
        steps: list[int],
        values: list[Any],
        times: list[int],
        attrs: str | None = None,
    ) -> SeriesPoints:
        """The series with its non-finite values (if any) moved to `texts`."""
        total = sum(values)  # NaN or ±inf anywhere makes the sum so; finite: none is
        if isinstance(total, int) or math.isfinite(total):
            return cls(recording_id, key, steps, values, times, None, attrs)
        texts: list[str | None] = [None] * len(values)
        numbers: list[float | int | None] = list(values)
        for i, value in enumerate(values):
            if value.__class__ is float and not math.isfinite(value):
                numbers[i], texts[i] = None, non_finite_text(value)
        if not any(texts):  # only the sum overflowed
            return cls(recording_id, key, steps, values, times, None, attrs)
        return cls(recording_id, key, steps, numbers, times, texts, attrs)

    @classmethod
    def joined(cls, parts: list[SeriesPoints]) -> SeriesPoints:
        """The points of several parts of one series (same recording, key and attributes), in
        order: a batch that holds a series twice (two metrics, two resources)."""
        first = parts[0]
        texts: list[str | None] | None = None
        if any(part.texts is not None for part in parts):
            texts = [t for p in parts for t in (p.texts or [None] * len(p))]
        return cls(
            first.recording_id,
            first.key,
            [step for part in parts for step in part.steps],
            [value for part in parts for value in part.values],
            [time for part in parts for time in part.times],
            texts,
            first.attrs,
        )

    def __len__(self) -> int:
        return len(self.steps)

    def rows(self, series_id: int) -> Iterator[PointRow]:
        """The points as rows of the points table, for the series numbered `series_id`."""
        n = len(self.steps)
        texts = repeat(None, n) if self.texts is None else self.texts
        return zip(repeat(series_id, n), self.steps, self.values, texts, self.times, strict=False)

    def flat(self, series_id: int) -> list[Any]:
        """The rows' values one after another (row i is `[5*i : 5*i + 5]`), laid out by slice
        assignments: the parameters of a multi-row INSERT without a tuple per point."""
        n = len(self.steps)
        out: list[Any] = [None] * (COLUMNS_A_ROW * n)  # value_text stays None where finite
        out[0::COLUMNS_A_ROW] = [series_id] * n
        out[1::COLUMNS_A_ROW] = self.steps
        out[2::COLUMNS_A_ROW] = self.values
        if self.texts is not None:
            out[3::COLUMNS_A_ROW] = self.texts
        out[4::COLUMNS_A_ROW] = self.times
        return out

    def distinct(self) -> bool:
        """True when no two points share a step and a time. Distinct steps (as a recorder
        writes them) settle it with one set of ints (~15 ns a point); else the pairs decide."""
        steps = self.steps
        n = len(steps)
        return len(set(steps)) == n or len(set(zip(steps, self.times, strict=True))) == n

    def without(self, stored: set[tuple[int, int]]) -> SeriesPoints:
        """The points whose (step, time) is not in `stored`, each identity's first only (the
        first to arrive wins: docs/protocol.md says why)."""
        seen = set(stored)
        keep: list[int] = []
        for i, identity in enumerate(zip(self.steps, self.times, strict=True)):
            if identity not in seen:
                seen.add(identity)
                keep.append(i)
        if len(keep) == len(self.steps):
            return self
        texts = self.texts
        return SeriesPoints(
            self.recording_id,
            self.key,
            [self.steps[i] for i in keep],
            [self.values[i] for i in keep],
            [self.times[i] for i in keep],
            None if texts is None else [texts[i] for i in keep],
            self.attrs,
        )

    def ascending(self) -> bool:
        """True when the steps never go down (as a recorder writes them). Sorting a sorted
        list is one pass in C (timsort finds one run): ~4 ns a step, a pairwise map ~48."""
        steps = self.steps
        return steps == sorted(steps)
