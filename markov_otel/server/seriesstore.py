"""The series reads of the stores: downsampled points in SQL, over step buckets kept at ingest.

`SeriesQueries` is mixed into `SqlStore`. Ingest folds each batch into `point_buckets`
(`rollups.py`); a read plans which bucket rows and which edge points to read, and one SQL
statement folds them into min/max (and first non-finite) per output bucket, with each database's
way of keeping the whole row of a minimum (SQLite's bare columns beside min()/max(),
PostgreSQL's DISTINCT ON). A series written before buckets existed is bucketed once, on its
first read (`series.buckets_ready` says which series are complete). Points and buckets are keyed
by the series' integer id (`series.series_id`, see schema.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from markov_otel.server.rollups import Bucket, BucketKey, Plan, bucket_points, plan

__all__ = [
    "BUCKET_COLUMNS",
    "MERGE_BUCKETS",
    "SERIES_ID",
    "Point",
    "SeriesQueries",
    "series_schema",
]

# (step, value or the non-finite text, time_unix_nano)
Point = tuple[int, "float | int | str", int]

BUCKET_COLUMNS = (
    "series_id, width, bucket, min_step, min_value, min_time, max_step, max_value, max_time,"
    " odd_step, odd_text, odd_time, n"
)
# Merge a batch's bucket (`excluded`) into the stored one (`b`), by the rules of rollups._fold_*.
_KEEP_MIN = "b.min_value IS NULL OR excluded.min_value < b.min_value OR (excluded.min_value ="
_KEEP_MIN += " b.min_value AND excluded.min_step < b.min_step)"
_KEEP_MAX = "b.max_value IS NULL OR excluded.max_value > b.max_value OR (excluded.max_value ="
_KEEP_MAX += " b.max_value AND excluded.max_step < b.max_step)"
_KEEP_ODD = "b.odd_step IS NULL OR excluded.odd_step < b.odd_step"
MERGE_BUCKETS = (
    " ON CONFLICT (series_id, width, bucket) DO UPDATE SET "
    + ", ".join(
        f"{col} = CASE WHEN {keep} THEN excluded.{col} ELSE b.{col} END"
        for keep, cols in ((_KEEP_MIN, "min"), (_KEEP_MAX, "max"), (_KEEP_ODD, "odd"))
        for col in (
            f"{cols}_step",
            f"{cols}_value" if cols != "odd" else "odd_text",
            f"{cols}_time",
        )
    )
    + ", n = b.n + excluded.n"
)
_UPSERT = f"INSERT INTO point_buckets AS b ({BUCKET_COLUMNS}) VALUES ({', '.join('?' * 13)})"
_UPSERT += MERGE_BUCKETS
# The series of (recording_id, key), for the reads that take those two parameters.
SERIES_ID = "(SELECT series_id FROM series WHERE recording_id = ? AND key = ?)"


def series_schema(value_type: str) -> list[str]:
    """CREATE statements of the bucket tables (each IF NOT EXISTS, beside the main schema)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS point_buckets (series_id BIGINT NOT NULL,
            width BIGINT NOT NULL, bucket BIGINT NOT NULL,
            min_step BIGINT, min_value {value_type}, min_time BIGINT,
            max_step BIGINT, max_value {value_type}, max_time BIGINT,
            odd_step BIGINT, odd_text TEXT, odd_time BIGINT, n BIGINT NOT NULL,
            PRIMARY KEY (series_id, width, bucket))""",
    ]


class SeriesQueries:
    """Downsampled series reads and the bucket upkeep at ingest (a mixin of `SqlStore`)."""

    dialect = "sqlite"
    lock_clause = ""
    _lock: threading.Lock

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _cursor(self) -> Any:
        raise NotImplementedError

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        raise NotImplementedError

    # -- ingest ----------------------------------------------------------------------------
    def _upsert_buckets(self, cur: Any, buckets: dict[BucketKey, Bucket]) -> None:
        """Merge `buckets` into point_buckets (PostgreSQL's store does it its own way)."""
        cur.executemany(self._sql(_UPSERT), [(*k, *b) for k, b in sorted(buckets.items())])

    def _ensure_buckets(self, recording_id: str, key: str) -> int | None:
        """The series' id (None: no such series), once its buckets are complete: a series
        stored before buckets existed is bucketed here (once; later batches keep it up).

        Safe with several server processes on one database: the backfill holds the lock of
        the recording's row (`FOR UPDATE`; SQLite's write lock) that every ingest into that
        recording takes first, so no batch lands between reading the points and replacing the
        buckets, and a second backfill waits, then finds the series ready.
        """
        sql = "SELECT series_id, buckets_ready FROM series WHERE recording_id = ? AND key = ?"
        with self._reading() as cur:
            row = self._run(cur, sql, [recording_id, key]).fetchone()
        if row is None or row[1]:
            return None if row is None else int(row[0])
        with self._tx() as cur:
            lock = "SELECT 1 FROM recordings WHERE recording_id = ?" + self.lock_clause
            self._run(cur, lock, [recording_id])
            series_id, ready = self._run(cur, sql, [recording_id, key]).fetchone()
            if ready:
                return int(series_id)
            points = self._run(
                cur,
                "SELECT series_id, step, value, value_text, time_unix_nano FROM points"
                " WHERE series_id = ? ORDER BY step, time_unix_nano",
                [series_id],
            ).fetchall()
            self._run(cur, "DELETE FROM point_buckets WHERE series_id = ?", [series_id])
            self._upsert_buckets(cur, bucket_points(points))
            ready_now = "UPDATE series SET buckets_ready = 1 WHERE series_id = ?"
            self._run(cur, ready_now, [series_id])
        return int(series_id)

    # -- reads -----------------------------------------------------------------------------
    def last_step(self, recording_id: str) -> int | None:
        """The highest step of any of the recording's series (None: no points), so a recorder
        resuming it from a fresh run dir goes on after it. One index probe per series."""
        sql = (
            "SELECT MAX((SELECT MAX(step) FROM points p WHERE p.series_id = s.series_id))"
            " FROM series s WHERE s.recording_id = ?"
        )
        with self._reading() as cur:
            row = self._run(cur, sql, [recording_id]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def step_range(self, recording_id: str, key: str) -> tuple[int, int] | None:
        """(first step, last step) of a series, or None when it has no points."""
        one = f"FROM points WHERE series_id = {SERIES_ID}"
        # Two sub-selects: SQLite answers a lone min() or max() from the index, not both at once.
        sql = f"SELECT (SELECT MIN(step) {one}), (SELECT MAX(step) {one})"
        with self._reading() as cur:
            row = self._run(cur, sql, [recording_id, key] * 2).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def last_point(self, recording_id: str, key: str) -> Point | None:
        """The point with the highest step (latest time among equal steps), or None."""
        sql = (
            "SELECT step, value, value_text, time_unix_nano FROM points"
            f" WHERE series_id = {SERIES_ID} ORDER BY step DESC, time_unix_nano DESC LIMIT 1"
        )
        with self._reading() as cur:
            row = self._run(cur, sql, [recording_id, key]).fetchone()
        return None if row is None else (row[0], row[2] if row[2] is not None else row[1], row[3])

    def point_rows(self, recording_id: str, key: str) -> list[Point]:
        """Every (step, value, time_unix_nano) of one key by step then time, as fetched: the
        value a number, or the protocol's text for a non-finite one. SQLite picks the value in
        SQL (a tuple of three per row, no Python pass: 2.5x `records()` on 120k points)."""
        if self.dialect == "postgresql":
            return self.records(recording_id, key)  # type: ignore[attr-defined]
        sql = (
            "SELECT step, IFNULL(value_text, value), time_unix_nano FROM points"
            f" WHERE series_id = {SERIES_ID} ORDER BY step, time_unix_nano"
        )
        with self._reading() as cur:
            rows: list[Point] = self._run(cur, sql, [recording_id, key]).fetchall()
        return rows

    def downsampled(
        self, recording_id: str, key: str, lo: int, hi: int, max_points: int
    ) -> tuple[list[Point], int]:
        """At most `max_points` points of steps `[lo, hi]`, each output bucket's min and max
        and first non-finite point; and the output bucket width in steps."""
        series_id = self._ensure_buckets(recording_id, key)
        for buckets in (max_points // 2 - 1, max_points // 3 - 1):
            how = plan(lo, hi, max(1, buckets))
            if series_id is None:
                return [], how.width
            points = self._read_plan(series_id, how)
            if len(points) <= max_points:
                break
        return points, how.width

    def _read_plan(self, series_id: int, how: Plan) -> list[Point]:
        sql, params = self._candidates(series_id, how)
        pick = _PICK_POSTGRES if self.dialect == "postgresql" else _PICK_SQLITE
        sql = f"WITH cand (step, value, value_text, t) AS ({sql}), b AS (SELECT step, value,"
        sql += f" value_text, t, (step - ?) / ? AS ob FROM cand) {pick}"
        with self._reading() as cur:
            rows = self._run(cur, sql, [*params, how.base, how.width]).fetchall()
        return [(s, text if text is not None else v, t) for s, v, text, t in rows]

    def _candidates(self, series_id: int, how: Plan) -> tuple[str, list[Any]]:
        """The UNION ALL of edge points and bucket extremes that the output buckets fold."""
        parts: list[str] = []
        params: list[Any] = []
        for lo, hi in how.raw:
            parts.append(
                "SELECT step, value, value_text, time_unix_nano FROM points"
                " WHERE series_id = ? AND step BETWEEN ? AND ?"
            )
            params += [series_id, lo, hi]
        if how.level is not None:
            where = "FROM point_buckets WHERE series_id = ? AND width = ?"
            where += " AND bucket BETWEEN ? AND ?"
            for columns, present in _BUCKET_PARTS:
                parts.append(f"SELECT {columns} {where} AND {present} IS NOT NULL")
                params += [series_id, how.level, how.first, how.last]
        return " UNION ALL ".join(parts), params


_BUCKET_PARTS = (
    ("min_step, min_value, NULL, min_time", "min_step"),
    ("max_step, max_value, NULL, max_time", "max_step"),
    ("odd_step, NULL, odd_text, odd_time", "odd_step"),
)
# SQLite: a bare column beside a lone min()/max() comes from the row holding that min/max.
_PICK_SQLITE = """SELECT step, value, value_text, t FROM (
    SELECT step, MIN(value) AS value, value_text, t FROM b WHERE value_text IS NULL GROUP BY ob
    UNION SELECT step, MAX(value), value_text, t FROM b WHERE value_text IS NULL GROUP BY ob
    UNION SELECT MIN(step), value, value_text, t FROM b WHERE value_text IS NOT NULL GROUP BY ob
) ORDER BY step, t"""
_PICK_POSTGRES = """SELECT step, value, value_text, t FROM (
    (SELECT DISTINCT ON (ob) step, value, value_text, t FROM b WHERE value_text IS NULL
     ORDER BY ob, value, step)
    UNION (SELECT DISTINCT ON (ob) step, value, value_text, t FROM b WHERE value_text IS NULL
     ORDER BY ob, value DESC, step)
    UNION (SELECT DISTINCT ON (ob) step, value, value_text, t FROM b WHERE value_text IS NOT NULL
     ORDER BY ob, step)
) AS picked ORDER BY step, t"""
