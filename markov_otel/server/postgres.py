"""The PostgreSQL store (psycopg 3): the shared SQL of `sqlstore.py`, points loaded with COPY."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from markov_otel.errors import ConfigError
from markov_otel.server.sqlstore import SeriesPoints, SqlStore, StoreRefused

__all__ = ["PostgresStore"]

_POINT_COLUMNS = ("recording_id", "key", "step", "value", "value_text", "time_unix_nano")
# information_schema's data_type -> the name binary COPY needs (a database of an older schema
# may hold values as REAL, which binary COPY must send as float4).
_BINARY_NAMES = {
    "text": "text", "bigint": "int8", "integer": "int4", "double precision": "float8",
    "real": "float4",
}  # fmt: skip


class PostgresStore(SqlStore):
    """Recordings in a PostgreSQL database, one autocommit connection, writes in transactions."""

    value_type = "DOUBLE PRECISION"
    dialect = "postgresql"
    lock_clause = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the PostgreSQL database at --db: {exc}") from exc
        self._sql_cache: dict[str, str] = {}
        self.create_schema()
        self._point_types = self._binary_types("points", _POINT_COLUMNS)

    def _binary_types(self, table: str, columns: Sequence[str]) -> list[str] | None:
        """The binary COPY type names of `columns` as this database holds them; None (COPY as
        text) when one is of a type not in `_BINARY_NAMES`."""
        sql = (
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s"
        )
        with self._tx() as cur:
            found = dict(cur.execute(sql, (table,)).fetchall())
        names = [_BINARY_NAMES.get(found.get(column, "")) for column in columns]
        return None if None in names else [str(name) for name in names]

    def _sql(self, sql: str) -> str:
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = sql.replace("?", "%s")
        return cached

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, opened again if the database went away (the failed request got 500)."""
        if self._conn.broken or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.DataError as exc:
            raise StoreRefused(f"PostgreSQL cannot store a value of this request: {exc}") from exc

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return super()._run(cur, sql, params)
        except psycopg.DataError as exc:
            raise StoreRefused(f"PostgreSQL cannot use a value of this request: {exc}") from exc

    def _cursor(self) -> Any:
        return self._connection().cursor()

    def _columns(self, cur: Any, table: str) -> set[str]:
        sql = (
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s"
        )
        return {name for (name,) in cur.execute(sql, (table,)).fetchall()}

    def _insert_points(self, cur: Any, points: Iterable[SeriesPoints]) -> None:
        sql = f"COPY points ({', '.join(_POINT_COLUMNS)}) FROM STDIN"
        binary = self._point_types is not None
        # Binary COPY: no number is formatted as text and parsed back (~30% faster).
        with cur.copy(sql + (" (FORMAT BINARY)" if binary else "")) as copy:
            if self._point_types is not None:
                copy.set_types(self._point_types)
            write = copy.write_row
            for series in points:
                for row in series.rows():
                    write(row)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
