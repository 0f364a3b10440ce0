"""Packed points: a series' points as three little-endian columns in one `bytes`, `n` int64
steps, then `n` float64 values (NaN, ±inf and -0.0 as themselves), then `n` int64 times (ns),
by step then time.

It is what GET /api/v1/history sends (history.py), and how the store also keeps each batch's points
of a series (`point_blocks`, written with the rows at ingest): a whole series is then read as a
few blobs joined column by column, instead of a Python tuple of three objects per point, which
bounds a read of millions of points by the row fetch (~0.5 µs a row).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from itertools import islice
from operator import itemgetter, lt
from typing import Any

__all__ = ["POINT_BYTES", "Block", "block", "columns", "count", "join", "pack"]

POINT_BYTES = 24
"""Bytes a point takes: its step, value and time, 8 each."""

Block = tuple[int, int, int, int, bytes]
"""A batch's points of one series: first step, first time, last step, last time, packed."""


def pack(points: Sequence[tuple[int, float | int | str, int]]) -> bytes:
    """Points (step, value or the protocol's non-finite text, time), in order, packed."""
    values: Any = map(_VALUE, points)
    try:
        numbers = array("d", values)
    except TypeError:  # a non-finite value, kept as text by the store
        numbers = array("d", (float(v) for v in map(_VALUE, points)))
    return _packed(array("q", map(_STEP, points)), numbers, array("q", map(_TIME, points)))


def block(
    steps: list[int], values: list[float | int | None], times: list[int], texts: Any
) -> Block:
    """A batch's points of one series (`texts`: the non-finite ones' text where `values` is
    None, or None), packed by step then time: as they come when the steps rise, the usual."""
    numbers: Any = values
    if texts is not None:
        numbers = [_number(v, t) for v, t in zip(values, texts, strict=True)]
    if not all(map(lt, steps, islice(steps, 1, None))):  # a step twice, or going back
        order = sorted(range(len(steps)), key=lambda i: (steps[i], times[i]))
        steps, times = [steps[i] for i in order], [times[i] for i in order]
        numbers = [numbers[i] for i in order]
    packed = _packed(array("q", steps), array("d", numbers), array("q", times))
    return steps[0], times[0], steps[-1], times[-1], packed


def count(packed: bytes) -> int:
    """How many points `packed` holds."""
    return len(packed) // POINT_BYTES


def columns(packed: bytes) -> tuple[bytes, bytes, bytes]:
    """The steps, values and times of `packed`, each little-endian bytes."""
    n = 8 * count(packed)
    return packed[:n], packed[n : 2 * n], packed[2 * n :]


def join(blocks: Sequence[bytes]) -> bytes:
    """Packed blocks one after the other, as one (column by column)."""
    if len(blocks) == 1:
        return blocks[0]
    parts = [columns(b) for b in blocks]
    return b"".join(p[c] for c in range(3) for p in parts)


def _packed(step: array[int], value: array[float], time: array[int]) -> bytes:
    if sys.byteorder == "big":
        for column in (step, value, time):
            column.byteswap()
    return step.tobytes() + value.tobytes() + time.tobytes()


def _number(value: float | int | None, text: str | None) -> float | int:
    return float(text) if text is not None else value if value is not None else math.nan


_STEP, _VALUE, _TIME = itemgetter(0), itemgetter(1), itemgetter(2)  # map(): no Python loop
