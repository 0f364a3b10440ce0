"""The fast path for the common protobuf metric: its points read off the wire bytes at once.

`otlp.py` walks a parsed protobuf metric through upb's Python wrappers, which make an object for
every point, attribute and value it touches (~0.65 µs a point: most of a protobuf body's parse).
The common metric (every point: a time, an `as_double`, and the one attribute `markov.step` as
an int, which is what the recorder and an OTel SDK's gauge send) is read here instead from the
bytes upb serializes it to, with C calls and no object per point but the numbers themselves.

Those bytes are upb's own serialization of a message it parsed, so they are canonical: fields in
field-number order and lengths consistent, whatever order the body came in. A common point then
has one of twenty layouts (with or without a start time; a step varint of 1 to 10 bytes), and
consecutive points mostly share one (steps cross a varint length at 128, 16384, ...). So the
points are taken a run of one layout at a time: that layout's regex must match every byte of
every point of the run (`_run`: each tag, length and the key, literally), which makes the run a
table of fixed-width rows, and each field is then a column cut out by extended slices. Any other
point (an `as_int`, a second attribute, exemplars, flags, a zero time, which proto3 omits) ends
the match short and the metric goes to the general walk, which reads every case. The fixed64
fields become numbers through `array`; the step varints through upb once more: concatenated,
they are a packed `repeated uint64` field, which `Buckets` (of an exponential histogram) holds.
"""

from __future__ import annotations

import re
import sys
from array import array
from functools import cache
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import ExponentialHistogramDataPoint

_STEP_ATTRIBUTE = rb"\x0a\x0bmarkov\.step"  # KeyValue.key
_HEAD = 2 + 9 + 9 + 2 + 13 + 2 + 1  # a point's bytes before its step varint, no start time
_START = 9  # start_time_unix_nano: tag and fixed64
_VARINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
_SUM_TAIL = re.compile(rb"(?:\x10" + _VARINT + rb")?(?:\x18" + _VARINT + rb")?")  # a sum's
_Steps = ExponentialHistogramDataPoint.Buckets
_BIG_ENDIAN = sys.byteorder == "big"  # fixed64 is little-endian on the wire
MAX_RUNS = 16
"""Runs of one layout a metric may take beyond one per 16 points (a run costs ~3 µs)."""


def wire_points(data: Any, count: int) -> tuple[list[int], list[float], list[int]] | None:
    """Steps, values and times of a gauge or sum (`data`) of `count` common points, or None."""
    raw = data.SerializeToString()
    times, values, varints = bytearray(), bytearray(), bytearray()
    pos, end, runs, longest = 0, len(raw), 0, 0
    while pos < end and raw[pos] == 0x0A:  # data_points, field 1
        runs += 1
        if runs > MAX_RUNS + count // 16:  # a layout a point or two: the walk is cheaper
            return None
        start = end > pos + 2 and raw[pos + 2] == 0x11
        width = raw[pos + 1] + 2 if end > pos + 1 else 0
        size = width - _HEAD - (_START if start else 0)  # the step varint's bytes
        if not 1 <= size <= 10:
            return None
        match = _run(start, size).match(raw, pos)
        if match is None:
            return None
        _columns(raw, pos, match.end(), width, start, size, times, values, varints)
        pos, longest = match.end(), max(longest, size)
    if not count or _SUM_TAIL.fullmatch(raw, pos) is None or len(times) != 8 * count:
        return None
    steps = _steps(bytes(varints), signed=longest == 10)
    return steps, _numbers("d", values), _numbers("Q", times)


@cache
def _run(start: bool, size: int) -> re.Pattern[bytes]:
    """Consecutive points of one layout, every byte checked: with or without a start time,
    a step varint of `size` bytes."""
    width = _HEAD + size + (_START if start else 0)
    point = (
        rb"\x0a" + re.escape(bytes([width - 2]))  # the point, of this length
        + (rb"\x11.{8}" if start else b"")  # start_time_unix_nano
        + rb"\x19.{8}\x21.{8}"  # time_unix_nano, as_double
        + rb"\x3a" + re.escape(bytes([16 + size])) + _STEP_ATTRIBUTE  # the one attribute
        + rb"\x12" + re.escape(bytes([1 + size])) + rb"\x18"  # its AnyValue.int_value
        + rb"[\x80-\xff]" * (size - 1) + rb"[\x00-\x7f]"  # a varint of `size` bytes
    )  # fmt: skip
    return re.compile(rb"(?:" + point + rb")+", re.S)


def _columns(
    raw: bytes, lo: int, hi: int, width: int, start: bool, size: int,
    times: bytearray, values: bytearray, varints: bytearray,
) -> None:  # fmt: skip
    """Append the run's times, values and step varints: a column a byte, by extended slices."""
    rows = (hi - lo) // width
    first = lo + 3 + (_START if start else 0)  # the time's first byte in the first row
    for column, offset, wide in ((times, first, 8), (values, first + 9, 8),
                                 (varints, lo + width - size, size)):  # fmt: skip
        out = bytearray(wide * rows)
        for byte in range(wide):
            out[byte::wide] = raw[offset + byte : hi : width]
        column += out


def _numbers(kind: str, data: bytearray) -> list[Any]:
    numbers = array(kind)
    numbers.frombytes(data)
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers.tolist()


def _steps(varints: bytes, *, signed: bool) -> list[int]:
    """The int64 steps of concatenated varints. A step below zero is two's complement in 10
    bytes, so only `signed` varints (some of 10 bytes) may need the sign put back: 9 bytes
    hold 63 bits."""
    steps = list(_Steps.FromString(b"\x12" + _varint(len(varints)) + varints).bucket_counts)
    if signed and max(steps) >= 1 << 63:
        steps = [s - (1 << 64) if s >= 1 << 63 else s for s in steps]
    return steps


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
