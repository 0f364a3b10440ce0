"""Where the backend keeps recordings: the `Store` interface, the SQLite store, `open_store(url)`.

`open_store` picks the implementation from the URL: `sqlite:///path`, a plain path, or
`postgresql://…` (see `postgres.py`). SQLite runs in WAL mode with `synchronous=NORMAL`, so
readers never block the writer and a crash loses at most the last commits, never the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from markov_otel.errors import ConfigError
from markov_otel.server.lanes import ReaderPool
from markov_otel.server.seriesstore import Point
from markov_otel.server.sqlstore import (
    BatchKey,
    EventRow,
    Forbidden,
    KeyReused,
    PointRow,
    SeriesPoints,
    SqlStore,
    StoreRefused,
)

__all__ = [
    "BatchKey",
    "EventRow",
    "Forbidden",
    "KeyReused",
    "PointRow",
    "SQLiteStore",
    "SeriesPoints",
    "Store",
    "StoreRefused",
    "open_store",
]


class Store(Protocol):
    """What the app needs from storage; every method is blocking and thread-safe. Reads
    (get, list_recordings, alerts, requirements, records, step_range, last_point, downsampled)
    run on reader connections of their own and never wait for a write's lock.

    `scope` is the one project a request's token may write (None: every project).
    """

    def register(
        self, fields: dict[str, Any], scope: str | None = None
    ) -> tuple[dict[str, Any], bool]: ...
    def get(self, recording_id: str) -> dict[str, Any] | None: ...
    def list_recordings(self, project_id: str | None = None) -> list[dict[str, Any]]: ...
    def recordings_state(self, project_id: str | None = None) -> list[dict[str, Any]]: ...
    def series_keys(self, project_id: str | None = None) -> list[str]: ...
    def marks(self, recording_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]: ...
    def delete(self, recording_id: str, scope: str | None = None) -> bool: ...
    def patch(
        self, recording_id: str, changes: dict[str, Any], scope: str | None = None
    ) -> dict[str, Any] | None: ...
    def alerts(self, recording_id: str) -> list[dict[str, Any]]: ...
    def requirements(self, recording_id: str) -> dict[str, Any] | None: ...
    def records(self, recording_id: str, key: str) -> list[tuple[int, float | int | str, int]]: ...
    def events_named(self, recording_id: str, name: str) -> list[tuple[int, dict[str, Any]]]: ...
    def point_rows(self, recording_id: str, key: str) -> list[Point]: ...
    def packed_points(self, recording_id: str, key: str) -> bytes: ...
    def step_range(self, recording_id: str, key: str) -> tuple[int, int] | None: ...
    def last_point(self, recording_id: str, key: str) -> Point | None: ...
    def last_step(self, recording_id: str) -> int | None: ...
    def downsampled(
        self, recording_id: str, key: str, lo: int, hi: int, max_points: int
    ) -> tuple[list[Point], int]: ...
    def ingest(
        self,
        key: BatchKey | None,
        resources: Sequence[tuple[str, dict[str, Any]]],
        points: Iterable[SeriesPoints] = (),
        events: Sequence[EventRow] = (),
        scope: str | None = None,
    ) -> bool: ...
    def name_artifact(
        self,
        recording_id: str,
        entry: dict[str, Any],
        model_id: str | None = None,
        *,
        replace: bool = True,
    ) -> None: ...
    def artifacts(self, recording_id: str) -> list[dict[str, Any]]: ...
    def model(self, model_id: str) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


class SQLiteStore(SqlStore):
    """A SQLite file in WAL mode (the default store: embedded, zero set-up)."""

    # No declared type: SQLite then keeps an integer as an integer and a float as a float.
    value_type = ""
    keeps_blocks = True

    def __init__(self, path: str) -> None:
        super().__init__()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self.create_schema()
        if path != ":memory:":  # another connection to ":memory:" would be another database
            self._readers = ReaderPool(lambda: _reader_connection(path))

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _cursor(self) -> Any:
        return self._conn.cursor()

    def _columns(self, cur: Any, table: str) -> set[str]:
        return {row[1] for row in cur.execute(f"PRAGMA table_info({table})").fetchall()}

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        with self._lock:
            self._conn.close()


def _reader_connection(path: str) -> sqlite3.Connection:
    """A connection that only reads: in WAL mode it reads the last commit while a batch is
    written, and neither waits for the other."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA query_only=1")
    return conn


def open_store(url: str) -> Store:
    """The store a `--db` URL names: `sqlite:///path`, a plain path, or `postgresql://…`."""
    if url.startswith(("postgresql://", "postgres://")):
        from markov_otel.server.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :] or ":memory:")
    if "://" in url:
        raise ConfigError(
            f"db={url!r} is not a supported database URL; use sqlite:///path/to/file.db, "
            "a plain file path, or postgresql://user@host/dbname"
        )
    return SQLiteStore(url)
