"""OTLP-JSON encoding: exact record points as Gauge data points, spans and logs as lines.

Metrics are encoded by hand with string templates because this runs for every point on the
flusher thread (budget ~2 µs a point; `json.dumps` of nested dicts costs several times that).
Spans and logs are few: they go through the official protobuf encoders and are then turned
into OTLP-JSON (hex ids, integer enums, int64 as strings) in one small converter.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from markov_otel import __version__
from markov_otel.otel.series import SeriesTable

Record = tuple[int, int, Mapping[str, Any]]
"""One add_record call: (time_unix_nano, step, {key: number})."""

_NAME_OK = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}")
_NAME_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.\-/]")
_INT64 = (-(2**63), 2**63)
_SCOPE = json.dumps({"name": "markov_otel", "version": __version__}, separators=(",", ":"))


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
    """Turns record batches into one OTLP-JSON `MetricsData` line per batch."""

    def __init__(self, series: SeriesTable | None = None) -> None:
        self._key_attr: dict[str, tuple[str, str]] = {}  # key -> (name JSON, extra attribute)
        self._extras: dict[str, str] = {}  # key -> the end of its points' attribute list
        self._series = series  # keys with attributes (system samples, rank tags); None: none

    def encode(self, records: Iterable[Record], resource: str) -> tuple[str, int]:
        """The line (without newline) and the number of points in it."""
        per_key: dict[str, list[str]] = {}
        extras = self._extras
        count = 0
        for time_ns, step, values in records:
            head = f'{{"timeUnixNano":"{time_ns}",'
            step_attr = f',"attributes":[{{"key":"markov.step","value":{{"intValue":"{step}"}}}}'
            for key, value in values.items():
                points = per_key.get(key)
                if points is None:
                    points = per_key[key] = []
                extra = extras.get(key) or self._key_extra(key)
                if type(value) is float and value - value == 0.0:  # the common case, inlined
                    points.append(f'{head}"asDouble":{value!r}{step_attr}{extra}')
                else:
                    points.append(f"{head}{number_json(value)}{step_attr}{extra}")
            count += len(values)
        metrics = ",".join(
            '{"name":' + self._key_attr[key][0] + ',"gauge":{"dataPoints":[' + ",".join(p) + "]}}"
            for key, p in per_key.items()
        )
        line = (
            '{"resourceMetrics":[{"resource":{"attributes":' + resource + '},"scopeMetrics":'
            '[{"scope":' + _SCOPE + ',"metrics":[' + metrics + "]}]}]}"
        )
        return line, count

    def _key_extra(self, key: str) -> str:
        cached = self._key_attr.get(key)
        if cached is None:
            name = metric_name(key)
            series = self._series.lookup(key, name) if self._series is not None else None
            extra = "]}"
            if series is not None:  # after markov.step: its attributes, then markov.key
                name = series.name
                attributes = dict(series.attributes)
                if series.key != name:
                    attributes["markov.key"] = series.key
                extra = "," + attributes_json(attributes)[1:-1] + "]}" if attributes else "]}"
            elif name != key:
                extra = ',{"key":"markov.key","value":{"stringValue":' + json.dumps(key) + "}}]}"
            cached = self._key_attr[key] = (json.dumps(name), extra)
            self._extras[key] = extra
        return cached[1]


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
                kind = next((k for k in ("gauge", "sum") if k in metric), None)
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
