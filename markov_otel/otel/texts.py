"""A recorded text as one OTLP log record, the way TensorBoard's add_text or W&B's tables keep
generated samples: the body is the text; `markov.key` and `markov.step` are its attributes, its
time the record's. Written to logs.jsonl by the flusher, sent like every log line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from markov_otel import __version__

EVENT = "markov.text"
"""The log record's eventName: how a reader tells a recorded text from lifecycle events."""

Item = tuple[int, int, str, str]
"""One recorded text: time_ns, step, key, text."""


def encode_lines(items: Sequence[Item], resource: str, max_bytes: int) -> Iterator[bytes]:
    """LogsData lines (newline included), each within `max_bytes` (a text is at most 64 KiB)."""
    records: list[dict[str, object]] = []
    size = 0
    for time_ns, step, key, text in items:
        record: dict[str, object] = {
            "timeUnixNano": str(time_ns),
            "observedTimeUnixNano": str(time_ns),
            "body": {"stringValue": text},
            "attributes": [
                {"key": "markov.key", "value": {"stringValue": key}},
                {"key": "markov.step", "value": {"intValue": str(step)}},
            ],
            "eventName": EVENT,
        }
        weight = len(text.encode("utf-8")) * 2 + len(key) * 2 + 200  # escapes at most double
        if records and size + weight > max_bytes - len(resource) - 200:
            yield _line(records, resource)
            records, size = [], 0
        records.append(record)
        size += weight
    if records:
        yield _line(records, resource)


def _line(records: list[dict[str, object]], resource: str) -> bytes:
    scope = {"name": "markov_otel", "version": __version__}
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": "@RESOURCE@"},
                "scopeLogs": [{"scope": scope, "logRecords": records}],
            }
        ]
    }
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return text.replace('"@RESOURCE@"', resource, 1).encode("utf-8") + b"\n"
