"""OTLP-JSON encoding: exact record points as Gauge data points, spans and logs as lines.

Metrics are encoded column by column from byte templates and orjson (`MetricsEncoder`) because
this runs for every point on the flusher thread, whose GIL time the training loop pays for:
about 0.2 µs a point, where `json.dumps` of nested dicts costs several µs.
Spans and logs are few: they go through the official protobuf encoders and are then turned
into OTLP-JSON (hex ids, integer enums, int64 as strings) in one small converter.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from markov_otel import __version__
from markov_otel.otel.series import SeriesTable

Record = tuple[int, int, Mapping[str, Any]]
"""One add_record call: (time_unix_nano, step, {key: number})."""

_NAME_OK = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}")
_NAME_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.\-/]")
_INT64 = (-(2**63), 2**63)
_SCOPE_HEAD = (
    b'},"scopeMetrics":[{"scope":'
    + json.dumps({"name": "markov_otel", "version": __version__}, separators=(",", ":")).encode()
    + b',"metrics":['
)


def metric_name(key: str) -> str:
    """The OTel instrument name for a record key (invalid characters become `_`)."""
    if _NAME_OK.fullmatch(key):
        return key
    name = _NAME_BAD_CHAR.sub("_", key)
    if not name[:1].isalpha() or not name[:1].isascii():
        name = "k_" + name
    return name[:255]


def number_json(value: Any) -> str:
    """The `asDouble`/`asInt` member of a point: non-finite doubles as strings, int64 as string."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:  # finite: repr() is valid JSON and round-trips exactly
            return '"asDouble":' + repr(value)
        return '"asDouble":"' + ("NaN" if value != value else _inf(value)) + '"'
    if kind is bool:
        return '"asInt":"1"' if value else '"asInt":"0"'
    if _INT64[0] <= value < _INT64[1]:
        return f'"asInt":"{value}"'
    return number_json(float(value))


def _inf(value: float) -> str:
    return "Infinity" if value > 0 else "-Infinity"


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP-JSON AnyValue for an attribute value."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int) and _INT64[0] <= value < _INT64[1]:
        return {"intValue": str(value)}
    if isinstance(value, (int, float)):
        value = float(value)
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else _inf(value)}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """A JSON array of OTLP KeyValue, compact, in the mapping's order."""
    items = [{"key": k, "value": any_value(v)} for k, v in attributes.items()]
    return json.dumps(items, separators=(",", ":"), allow_nan=False)


class MetricsEncoder:
    """Turns record batches into one OTLP-JSON `MetricsData` line per batch (bytes).

    The flusher spends its GIL time here, so the common case runs column by column in C loops:
    consecutive records with the same keys form a run (a key's points stay in record order),
    each key's values in a run are taken as a column
    (`itemgetter`), a column of finite floats is formatted by orjson in one call, and the points
    are woven from per-record prefixes (time and step, shared by every key of a record) and the
    formatted values, then the line is joined once. A point's members come in the order
    timeUnixNano, attributes, asDouble (JSON readers do not care; it lets the prefix be shared).
    Ints, bools, non-finite floats, and keys whose points carry more attributes (a sanitised
    name's `markov.key`, a series' attributes) take the general path, one point at a time.
    """

    def __init__(self, series: SeriesTable | None = None) -> None:
        self._names: dict[str, tuple[bytes, bytes | None]] = {}  # key -> (opening, extra)
        self._series = series  # keys with attributes (system samples, rank tags); None: none

    def encode(self, records: Sequence[Record], resource: str) -> tuple[bytes, int]:
        """The line (without newline) and the number of points in it."""
        line, count = self.encode_columns(
            list(map(_FIRST, records)), list(map(_SECOND, records)), list(map(_VALUES, records)),
            resource,
        )  # fmt: skip
        return line[:-1], count

    def encode_columns(
        self,
        times: list[int],
        steps: list[int],
        values: list[Mapping[str, Any]] | None,
        resource: str,
        grouped: Runs | None = None,
        split: Split | None = None,
    ) -> tuple[bytes, int]:
        """`encode` of records given as columns (the flusher's form), the line ending in its
        newline as the spool takes it (one copy of half a megabyte less a batch). `grouped`
        and `split` are `layout(values)` when the caller has it already; `values` may then be
        None for a batch of one shape (the encoder process is given its columns only)."""
        if grouped is None:
            assert values is not None
            grouped, split = layout(values)
        columns: dict[str, list[list[bytes]]] = {}
        count = 0
        for keys, lo, hi in grouped:
            run_times, run_steps = times[lo:hi], steps[lo:hi]
            short = hi - lo < _COLUMNS
            prefixes = (
                [] if short else list(map(_PREFIX.__mod__, zip(run_times, run_steps, strict=True)))
            )
            if split is not None:  # one run: its columns are cut already
                run_columns = split[1]
            else:
                assert values is not None
                dicts = values[lo:hi]
                run_columns = [list(map(itemgetter(key), dicts)) for key in keys]
            for key, column in zip(keys, run_columns, strict=True):
                points = self._points(key, column, prefixes, run_times, run_steps)
                columns.setdefault(key, []).append(points)
            count += len(keys) * (hi - lo)
        parts = [_HEAD, resource.encode("utf-8"), _SCOPE_HEAD]
        for index, (key, chunks) in enumerate(columns.items()):
            parts.append(self._opening(key)[0] if index == 0 else b"]}}," + self._opening(key)[0])
            chunks[0][0] = chunks[0][0][2:]  # the first point of a metric opens without "},"
            for chunk in chunks:
                parts += chunk
            parts.append(b"}")
        parts.append(b"]}}]}]}]}\n" if columns else b"]}]}]}\n")
        return b"".join(parts), count

    def _points(
        self,
        key: str,
        column: list[Any],
        prefixes: list[bytes],
        times: list[int],
        steps: list[int],
    ) -> list[bytes]:
        """The points of one key as parts, each point opening with `},{`."""
        extra = self._opening(key)[1]
        total = math.nan if extra is not None or not prefixes else sum(column)
        if total - total == 0.0 and set(map(type, column)) == {float}:  # all finite floats
            parts: list[bytes] = [b""] * (2 * len(column))
            parts[0::2] = prefixes
            parts[1::2] = orjson.dumps(column)[1:-1].split(b",")
            return parts
        return [
            _GENERAL % (t, s, extra or b"", number_json(v).encode("ascii"))
            for t, s, v in zip(times, steps, column, strict=True)
        ]

    def _opening(self, key: str) -> tuple[bytes, bytes | None]:
        """The metric's opening, and the attributes its points carry after markov.step."""
        cached = self._names.get(key)
        if cached is None:
            name = metric_name(key)
            series = self._series.lookup(key, name) if self._series is not None else None
            extra: Mapping[str, Any] | None = None
            if series is not None:  # after markov.step: its attributes, then markov.key
                name = series.name
                extra = dict(series.attributes)
                if series.key != name:
                    extra["markov.key"] = series.key
            elif name != key:
                extra = {"markov.key": key}
            head = b'{"name":' + json.dumps(name).encode() + b',"gauge":{"dataPoints":['
            tail = ("," + attributes_json(extra)[1:-1]).encode() if extra else None
            cached = self._names[key] = (head, tail)
        return cached


_HEAD = b'{"resourceMetrics":[{"resource":{"attributes":'
_POINT = b'"timeUnixNano":"%d","attributes":[{"key":"markov.step","value":{"intValue":"%d"}}'
_PREFIX = b"},{" + _POINT + b'],"asDouble":'
_GENERAL = b"},{" + _POINT + b"%s],%s"


_COLUMNS = 4
"""A run of fewer records goes point by point: a column's set-up would cost more."""


_VALUES, _FIRST, _SECOND = itemgetter(2), itemgetter(0), itemgetter(1)


Runs = list[tuple[tuple[str, ...], int, int]]
"""Runs of consecutive records with the same keys: (keys, first index, index after the last)."""

Split = tuple[tuple[str, ...], list[list[Any]]]
"""A batch whose records all have the same keys: those keys, and each key's column of values."""


def layout(values: Sequence[Mapping[str, Any]]) -> tuple[Runs, Split | None]:
    """The runs of a batch and, when its records all have the same keys (the usual batch:
    one run), its columns, in C loops. Same keys means the same number of keys, each of the
    first record's found in every record, whatever their order: the run takes the first
    record's order (~70 ns a record, where a tuple of every record's keys took ~115)."""
    if not values:
        return [], None
    keys = tuple(values[0])
    if list(map(len, values)).count(len(keys)) != len(values):
        return runs(values), None
    try:
        columns = [list(map(itemgetter(k), values)) for k in keys]
    except KeyError:  # another key in some record: several runs
        return runs(values), None
    return [(keys, 0, len(values))], (keys, columns)


def runs(values: Sequence[Mapping[str, Any]]) -> Runs:
    """Consecutive records with the same keys (in the same order), in order (C loops only)."""
    out: Runs = []
    lo = 0
    for keys, run in groupby(map(tuple, values)):
        hi = lo + sum(1 for _ in run)
        out.append((keys, lo, hi))
        lo = hi
    return out


def rows(split: Split) -> list[Mapping[str, Any]]:
    """The records of a batch given as columns (`layout`), as dicts again."""
    keys, columns = split
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def encode_lines(
    encoder: MetricsEncoder,
    times: list[int],
    steps: list[int],
    values: list[Mapping[str, Any]] | None,
    resource: str,
    max_bytes: int,
    grouped: Runs | None = None,
    split: Split | None = None,
) -> list[tuple[bytes, int]]:
    """A batch as one spool line (newline included) and its points, or as several lines when
    one would pass `max_bytes` (records cut in parts, or one wide record's keys). `values`
    may be None when `split` holds them (`encode_columns`)."""
    if grouped is None:  # the split decides how a line too big is cut: always known here
        assert values is not None
        grouped, split = layout(values)
    line, points = encoder.encode_columns(times, steps, values, resource, grouped, split)
    if len(line) < max_bytes or points <= 1:
        return [(line, points)]
    # Too big for one line (rare): cut as records, which the split rebuilds in its keys' order,
    # so the flusher and the encoder process cut a batch into the same lines byte for byte.
    records = rows(split) if split is not None else values
    assert records is not None
    parts = math.ceil(len(line) / (max_bytes * 0.8))
    n = len(records)
    if n > 1:
        size = math.ceil(n / min(parts, n))
        cuts = [(times[i : i + size], steps[i : i + size], records[i : i + size])
                for i in range(0, n, size)]  # fmt: skip
    else:  # one record wider than a batch: its keys go into several lines
        keys = list(records[0])
        size = math.ceil(len(keys) / min(parts, len(keys)))
        cuts = [(times, steps, [{k: records[0][k] for k in keys[i : i + size]}])
                for i in range(0, len(keys), size)]  # fmt: skip
    return [part for cut in cuts for part in encode_lines(encoder, *cut, resource, max_bytes)]


_ID_FIELDS = {"traceId", "spanId", "parentSpanId"}


def proto_to_otlp_json(message: Message) -> str:
    """OTLP-JSON for a protobuf message: protobuf's mapping, but ids in hex, enums as integers."""
    data = MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hex_ids(data), separators=(",", ":"), allow_nan=False)


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _b64_to_hex(v) if k in _ID_FIELDS and isinstance(v, str) else _hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def split_metrics_line(line: bytes, max_bytes: int) -> list[bytes]:
    """A metrics line as several OTLP-JSON MetricsData of at most about `max_bytes` each.

    Every part keeps the resource and scope of its points; points keep their order. The same
    line and limit always give the same parts (their Idempotency-Keys depend on it).
    """
    doc = json.loads(line)
    parts: list[bytes] = []
    for rm in doc.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            head = {"resource": rm.get("resource", {}), "scope": sm.get("scope", {})}
            overhead = len(json.dumps(head)) + 100
            metrics: list[dict[str, Any]] = []
            size = overhead
            for metric in sm.get("metrics", []):
                kinds = ("gauge", "sum", "exponentialHistogram")
                kind = next((k for k in kinds if k in metric), None)
                points = metric[kind].get("dataPoints", []) if kind else []
                for point in points or [None]:
                    piece = len(json.dumps(point)) + len(metric.get("name", "")) + 60
                    if metrics and size + piece > max_bytes:
                        parts.append(_metrics_part(head, metrics))
                        metrics, size = [], overhead
                    _add_point(metrics, metric, kind, point)
                    size += piece
            if metrics:
                parts.append(_metrics_part(head, metrics))
    return parts


def _add_point(
    metrics: list[dict[str, Any]], metric: dict[str, Any], kind: str | None, point: Any
) -> None:
    """Append `point` of `metric` to the part being built (a metric without points as is)."""
    if kind is None or point is None:
        metrics.append(metric)
        return
    if not metrics or metrics[-1].get("name") != metric.get("name") or kind not in metrics[-1]:
        body = {k: v for k, v in metric[kind].items() if k != "dataPoints"}
        metrics.append({**metric, kind: {**body, "dataPoints": []}})
    metrics[-1][kind]["dataPoints"].append(point)


def _metrics_part(head: dict[str, Any], metrics: list[dict[str, Any]]) -> bytes:
    scope_metrics = [{"scope": head["scope"], "metrics": metrics}]
    doc = {"resourceMetrics": [{"resource": head["resource"], "scopeMetrics": scope_metrics}]}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def lines_of(batch: Sequence[str]) -> bytes:
    """Whole lines ready for one append: each ends with a newline."""
    return ("\n".join(batch) + "\n").encode("utf-8")
