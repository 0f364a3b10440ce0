"""The fast path for the common protobuf metric: its points read off the wire bytes at once.

`otlp.py` walks a parsed protobuf metric through upb's Python wrappers, which make an object for
every point, attribute and value it touches (~0.65 µs a point: most of a protobuf body's parse).
The common metric (every point: a time, an `as_double`, and the one attribute `markov.step` as
an int, which is what the recorder and an OTel SDK's gauge send) is read here instead from the
bytes upb serializes it to: C calls, no object per point but the numbers themselves.

Those bytes are upb's own serialization of a message it parsed, so they are canonical: fields in
field-number order, lengths consistent, whatever order the body came in. One regex must match
them whole (`_WHOLE`: a sequence of common points, then a sum's two scalar fields if any); any
other point (an `as_int`, a second attribute, exemplars, flags, a zero time, which proto3 omits)
fails it and the metric goes to the general walk, which reads every case. Then `findall` takes
each point's time, value and step bytes, the fixed64 ones become numbers through `array`, and
the step varints through upb again: concatenated, they are a packed `repeated uint64` field,
which `Buckets` (of an exponential histogram point) holds.
"""

from __future__ import annotations

import re
import sys
from array import array
from operator import itemgetter
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import ExponentialHistogramDataPoint

_POINT = (
    rb"\x0a[\x00-\x7f]"  # a data point (field 1) of under 128 bytes
    rb"(?:\x11.{8})?"  # start_time_unix_nano (fixed64), if set
    rb"\x19(.{8})"  # time_unix_nano (fixed64)
    rb"\x21(.{8})"  # as_double (fixed64)
    rb"\x3a[\x00-\x7f]\x0a\x0bmarkov\.step"  # the one attribute, markov.step ...
    rb"\x12[\x00-\x7f]\x18([\x80-\xff]{0,9}[\x00-\x7f])"  # ... = int_value (varint)
)
_VARINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
_SUM_TAIL = rb"(?:\x10" + _VARINT + rb")?(?:\x18" + _VARINT + rb")?"  # temporality, monotonic
_WHOLE = re.compile(rb"(?:" + _POINT.replace(b"(.", b"(?:.").replace(b"([", b"(?:[") + rb")*"
                    + _SUM_TAIL, re.S)  # fmt: skip
_POINTS = re.compile(_POINT, re.S)
_TIME, _VALUE, _STEP = itemgetter(0), itemgetter(1), itemgetter(2)
_Steps = ExponentialHistogramDataPoint.Buckets
_BIG_ENDIAN = sys.byteorder == "big"  # fixed64 is little-endian on the wire


def wire_points(data: Any, count: int) -> tuple[list[int], list[float], list[int]] | None:
    """Steps, values and times of a gauge or sum (`data`) of `count` common points, or None."""
    raw = data.SerializeToString()
    if not count or _WHOLE.fullmatch(raw) is None:
        return None
    found = _POINTS.findall(raw)
    if len(found) != count:  # cannot happen for bytes `_WHOLE` matched; never guess
        return None
    times, values = array("Q"), array("d")
    times.frombytes(b"".join(map(_TIME, found)))
    values.frombytes(b"".join(map(_VALUE, found)))
    if _BIG_ENDIAN:
        times.byteswap()
        values.byteswap()
    varints = b"".join(map(_STEP, found))
    steps = list(_Steps.FromString(b"\x12" + _varint(len(varints)) + varints).bucket_counts)
    if max(steps) >= 1 << 63:  # int64 steps below zero arrive as their two's complement
        steps = [s - (1 << 64) if s >= 1 << 63 else s for s in steps]
    return steps, values.tolist(), times.tolist()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
