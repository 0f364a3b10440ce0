"""`mkv export`: a run's points in long form (step, time, key, value) as CSV, JSON Lines or
Parquet.

`time` is the record time in UTC, ISO 8601 with nanoseconds (`2024-05-01T12:01:05.123456789Z`)
in CSV and JSON Lines, a `timestamp[ns, UTC]` column in Parquet. Non-finite values are `NaN`,
`Infinity`, `-Infinity` in CSV (Python's float() and pandas read them back) and the same strings
in JSON Lines (as the protocol writes them: JSON has no bare NaN). A CSV key that a spreadsheet
would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return) is written
with a leading `'`, as OWASP advises; a key holding a comma, quote or line break is quoted. CSV
and JSON Lines need nothing beyond the standard library; Parquet needs pyarrow (the extra
`markov-otel[parquet]`).

`--distributions KEY` and `--texts KEY` write a key's recorded arrays (one row per step: step,
time, count, sum, min, max, zero_count, scale, positive_offset, positive, negative_offset,
negative, the non-finite counts) or texts (step, time, text) instead, as JSON Lines or Parquet.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from markov_otel.errors import ConfigError
from markov_otel.read import Distribution, Point, Text

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("step", "time", "key", "value")
_PARQUET_CHUNK = 100_000  # rows held in memory per Parquet row group


def iso_time(time_unix_nano: int) -> str:
    """UTC, ISO 8601, all nine digits of the nanoseconds: exact, and sorts as text."""
    seconds, nanos = divmod(time_unix_nano, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def text_value(value: float | int) -> str | float | int:
    """A value as JSON and CSV can hold it: non-finite floats as the protocol's strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def write_stream(points: Iterable[Point], fmt: str, stream: TextIO) -> int:
    """Write CSV or JSON Lines to a text stream; the number of points written."""
    if fmt == "csv":
        return _write_csv(points, stream)
    if fmt == "jsonl":
        return _write_jsonl(points, stream)
    if fmt == "parquet":
        raise ConfigError("--format parquet is binary: name a file with -o FILE.parquet")
    raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def write_file(points: Iterable[Point], fmt: str, path: Path) -> int:
    """Write a file in `fmt`; the number of points written. Written beside `path` and renamed
    into place when complete: a failed export (an unknown run, a backend gone mid-way) leaves
    no file, and an existing file is untouched until the new one is whole."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "parquet":
            count = _write_parquet(points, partial)
        else:
            with open(partial, "w", encoding="utf-8", newline="") as fh:
                count = write_stream(points, fmt, fh)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may read as the start of a formula (OWASP, "CSV Injection")."""


def _write_csv(points: Iterable[Point], stream: TextIO) -> int:
    stream.write(",".join(COLUMNS) + "\n")
    count = 0
    for p in points:
        value = _csv_number(text_value(p.value))
        stream.write(f"{p.step},{iso_time(p.time_unix_nano)},{csv_cell(csv_text(p.key))},{value}\n")
        count += 1
    return count


def csv_cell(text: str) -> str:
    """RFC 4180 quoting, of a lone "\r" too: the csv module's QUOTE_MINIMAL leaves one bare when
    the line ends in "\n", and a spreadsheet splits the row on it."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_text(text: str) -> str:
    """A free-text cell a spreadsheet shows as text: one that begins like a formula gets a
    leading apostrophe, as OWASP advises (keys are the only free text of an export)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_number(value: str | float | int) -> str:
    return value if isinstance(value, str) else repr(value)  # repr: the shortest exact float


def _write_jsonl(points: Iterable[Point], stream: TextIO) -> int:
    count = 0
    for p in points:
        row = {"step": p.step, "time": iso_time(p.time_unix_nano), "key": p.key}
        row["value"] = text_value(p.value)
        stream.write(json.dumps(row, allow_nan=False) + "\n")
        count += 1
    return count


def _write_parquet(points: Iterable[Point], path: Path) -> int:
    pa, pq = _pyarrow()
    schema = pa.schema(
        [("step", pa.int64()), ("time", pa.timestamp("ns", tz="UTC")), ("key", pa.string()),
         ("value", pa.float64())]
    )  # fmt: skip
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for chunk in _chunks(points, _PARQUET_CHUNK):
            columns = (
                [p.step for p in chunk],
                [p.time_unix_nano for p in chunk],
                [p.key for p in chunk],
                [float(p.value) for p in chunk],
            )
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(chunk)
    return count


def _chunks(points: Iterable[Point], size: int) -> Iterator[list[Point]]:
    chunk: list[Point] = []
    for point in points:
        chunk.append(point)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ConfigError(
            "--format parquet needs pyarrow: pip install pyarrow (it is the extra "
            "markov-otel[parquet]); csv and jsonl need nothing"
        ) from exc
    return pyarrow, pyarrow.parquet


def distribution_rows(found: Iterable[Distribution]) -> list[dict[str, Any]]:
    """Rows of recorded arrays: a Distribution's fields, `time` as for points."""
    rows = []
    for d in found:
        row: dict[str, Any] = {"step": d.step, "time": iso_time(d.time_unix_nano)}
        row.update({k: v for k, v in vars(d).items() if k not in ("step", "time_unix_nano")})
        row["positive"], row["negative"] = list(d.positive), list(d.negative)
        rows.append(row)
    return rows


def text_rows(found: Iterable[Text]) -> list[dict[str, Any]]:
    return [{"step": t.step, "time": iso_time(t.time_unix_nano), "text": t.text} for t in found]


def write_rows_stream(rows: list[dict[str, Any]], fmt: str, stream: TextIO) -> int:
    """JSON Lines of `rows` to a text stream (their nested buckets have no CSV form)."""
    if fmt != "jsonl":
        raise ConfigError(
            f"--format {fmt} cannot hold distributions and texts on a stream: use --format "
            "jsonl, or -o FILE.parquet --format parquet"
        )
    for row in rows:
        row = {k: text_value(v) if isinstance(v, float) else v for k, v in row.items()}
        stream.write(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n")
    return len(rows)


def write_rows_file(rows: list[dict[str, Any]], fmt: str, path: Path) -> int:
    """`rows` as JSON Lines or Parquet (pyarrow infers the columns, lists as list columns)."""
    if fmt != "parquet":
        with open(path, "w", encoding="utf-8") as fh:
            return write_rows_stream(rows, fmt, fh)
    pa, pq = _pyarrow()
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return len(rows)
