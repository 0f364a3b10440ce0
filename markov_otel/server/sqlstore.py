"""The storage logic both databases share: schema, recordings, points, alerts, idempotency keys.

SQL here is portable (SQLite >= 3.24 and PostgreSQL): `?` placeholders, which the PostgreSQL store
rewrites to `%s`; JSON kept as text; non-finite point values in a text column beside the number
(SQLite stores a NaN REAL as NULL). One connection guarded by a lock: writes are serialised by
both databases anyway, and a reference backend should be simple before it is clever.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from markov_otel.server.records import IDENTITY_FIELDS, JSON_FIELDS, from_resource, now
from markov_otel.server.seriesstore import SeriesQueries, series_schema

__all__ = ["EventRow", "PointRow", "SqlStore", "StoreRefused"]

# (recording_id, key, step, value, value_text, time_unix_nano)
PointRow = tuple[str, str, int, "float | int | None", "str | None", int]
# (recording_id, signal, name, time_unix_nano, attributes)
EventRow = tuple[str, str, str, int, dict[str, Any]]

_COLUMNS = (
    "recording_id",
    *IDENTITY_FIELDS,
    *JSON_FIELDS,
    "status",
    "points",
    "created_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM recordings"


class StoreRefused(ValueError):
    """The database cannot hold a value of the request (e.g. NUL in PostgreSQL text): a 400."""


def schema(value_type: str) -> list[str]:
    """CREATE statements; `value_type` is the point value column's type in this database."""
    identity = ", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in IDENTITY_FIELDS)
    return [
        f"""CREATE TABLE IF NOT EXISTS recordings (recording_id TEXT PRIMARY KEY, {identity},
            metadata TEXT NOT NULL, hyper_parameters TEXT NOT NULL, summary TEXT NOT NULL,
            status TEXT NOT NULL, requirements TEXT, points BIGINT NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS points (recording_id TEXT NOT NULL, key TEXT NOT NULL,
            step BIGINT NOT NULL, value {value_type}, value_text TEXT,
            time_unix_nano BIGINT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS points_by_key"
        " ON points (recording_id, key, step, time_unix_nano)",
        """CREATE TABLE IF NOT EXISTS series (recording_id TEXT NOT NULL, key TEXT NOT NULL,
            PRIMARY KEY (recording_id, key))""",
        """CREATE TABLE IF NOT EXISTS alerts (recording_id TEXT NOT NULL, alert_id TEXT NOT NULL,
            seq BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (recording_id, alert_id))""",
        """CREATE TABLE IF NOT EXISTS events (recording_id TEXT NOT NULL, signal TEXT NOT NULL,
            name TEXT NOT NULL, time_unix_nano BIGINT NOT NULL, attributes TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY,
            created_at TEXT NOT NULL)""",
    ]


class SqlStore(SeriesQueries):
    """Recordings and their points in a SQL database; subclasses supply the connection."""

    value_type = "REAL"
    lock_clause = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    # -- what a database supplies ------------------------------------------------------------
    def _transaction(self) -> AbstractContextManager[Any]:
        """A context that runs its body in one transaction and yields a cursor."""
        raise NotImplementedError

    def _cursor(self) -> Any:
        """A cursor for reads outside a transaction."""
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def _insert_points(self, cur: Any, rows: Sequence[PointRow]) -> None:
        cur.executemany(
            self._sql(
                "INSERT INTO points (recording_id, key, step, value, value_text, time_unix_nano)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            ),
            rows,
        )

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock, self._transaction() as cur:
            yield cur

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def create_schema(self) -> None:
        """Create the tables if they do not exist."""
        with self._tx() as cur:
            for statement in [*schema(self.value_type), *series_schema(self.value_type)]:
                self._run(cur, statement)

    # -- recordings ------------------------------------------------------------------------
    def register(self, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Register a recording unless its id exists; return (recording, created)."""
        with self._tx() as cur:
            created = self._insert_recording(cur, fields)
            row = self._fetch(cur, fields["recording_id"])
        assert row is not None
        return row, created

    def _insert_recording(self, cur: Any, fields: dict[str, Any]) -> bool:
        stamp = now()
        values = [fields["recording_id"]]
        values += [str(fields.get(name) or "") for name in IDENTITY_FIELDS]
        values += [json.dumps(fields.get(name) or {}) for name in JSON_FIELDS]
        values += [fields.get("status") or "running", 0, stamp, stamp]
        marks = ", ".join("?" * len(values))
        sql = f"INSERT INTO recordings ({', '.join(_COLUMNS)}) VALUES ({marks})"
        self._run(cur, sql + " ON CONFLICT (recording_id) DO NOTHING", values)
        return bool(cur.rowcount == 1)

    def get(self, recording_id: str) -> dict[str, Any] | None:
        """The recording (with its keys), or None."""
        with self._lock:
            return self._fetch(self._cursor(), recording_id)

    def _fetch(self, cur: Any, recording_id: str, lock: bool = False) -> dict[str, Any] | None:
        sql = _SELECT + " WHERE recording_id = ?" + (self.lock_clause if lock else "")
        row = self._run(cur, sql, [recording_id]).fetchone()
        if row is None:
            return None
        recording = _row_to_recording(row)
        keys = self._run(
            cur, "SELECT key FROM series WHERE recording_id = ? ORDER BY key", [recording_id]
        )
        recording["keys"] = [k for (k,) in keys.fetchall()]
        return recording

    def list_recordings(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """All recordings (of a project), newest first; without `keys`."""
        where, params = ("", []) if project_id is None else (" WHERE project_id = ?", [project_id])
        sql = _SELECT + where + " ORDER BY created_at DESC, recording_id"
        with self._lock:
            rows = self._run(self._cursor(), sql, params).fetchall()
        return [_row_to_recording(row) for row in rows]

    def projects_of(self, recording_ids: Sequence[str]) -> dict[str, str]:
        """recording_id -> project_id for those of `recording_ids` that exist."""
        with self._lock:
            cur = self._cursor()
            found = {}
            for rid in set(recording_ids):
                row = self._run(
                    cur, "SELECT project_id FROM recordings WHERE recording_id = ?", [rid]
                ).fetchone()
                if row is not None:
                    found[rid] = row[0]
            return found

    def patch(self, recording_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Merge `changes` (protocol PATCH body) into a recording; None when it does not exist."""
        with self._tx() as cur:
            current = self._fetch(cur, recording_id, lock=True)
            if current is None:
                return None
            self._update(cur, current, changes)
            if "requirements" in changes:
                sql = "UPDATE recordings SET requirements = ? WHERE recording_id = ?"
                self._run(cur, sql, [json.dumps(changes["requirements"]), recording_id])
            for alert in changes.get("alerts") or ():
                self._add_alert(cur, recording_id, alert)
            return self._fetch(cur, recording_id)

    def _update(self, cur: Any, current: dict[str, Any], changes: dict[str, Any]) -> None:
        sets: dict[str, Any] = {}
        for name in ("hyper_parameters", "summary", "metadata"):
            if changes.get(name):
                sets[name] = json.dumps({**current[name], **changes[name]})
        for name in ("status", "notes"):
            if name in changes and changes[name] != current[name]:
                sets[name] = changes[name]
        if not sets:
            return
        sets["updated_at"] = now()
        assignments = ", ".join(f"{name} = ?" for name in sets)
        sql = f"UPDATE recordings SET {assignments} WHERE recording_id = ?"
        self._run(cur, sql, [*sets.values(), current["recording_id"]])

    def _add_alert(self, cur: Any, recording_id: str, alert: dict[str, Any]) -> None:
        sql = "SELECT COALESCE(MAX(seq), -1) + 1 FROM alerts WHERE recording_id = ?"
        seq = self._run(cur, sql, [recording_id]).fetchone()[0]
        sql = "INSERT INTO alerts (recording_id, alert_id, seq, body) VALUES (?, ?, ?, ?)"
        params = [recording_id, str(alert["alert_id"]), seq, json.dumps(alert)]
        self._run(cur, sql + " ON CONFLICT (recording_id, alert_id) DO NOTHING", params)

    def alerts(self, recording_id: str) -> list[dict[str, Any]]:
        """The recording's alerts in firing order."""
        sql = "SELECT body FROM alerts WHERE recording_id = ? ORDER BY seq"
        with self._lock:
            rows = self._run(self._cursor(), sql, [recording_id]).fetchall()
        return [json.loads(body) for (body,) in rows]

    def requirements(self, recording_id: str) -> dict[str, Any] | None:
        """The stored environment.json of a recording, or None."""
        sql = "SELECT requirements FROM recordings WHERE recording_id = ?"
        with self._lock:
            row = self._run(self._cursor(), sql, [recording_id]).fetchone()
        return None if row is None or row[0] is None else dict(json.loads(row[0]))

    # -- points and events -----------------------------------------------------------------
    def records(self, recording_id: str, key: str) -> list[tuple[int, float | int | str, int]]:
        """(step, value, time_unix_nano) of one key, by step then time; non-finite as text."""
        sql = (
            "SELECT step, value, value_text, time_unix_nano FROM points"
            " WHERE recording_id = ? AND key = ? ORDER BY step, time_unix_nano"
        )
        with self._lock:
            rows = self._run(self._cursor(), sql, [recording_id, key]).fetchall()
        return [(s, t if t is not None else v, ns) for s, v, t, ns in rows]

    def ingest(
        self,
        idempotency_key: str | None,
        resources: Sequence[tuple[str, dict[str, Any]]],
        points: Sequence[PointRow] = (),
        events: Sequence[EventRow] = (),
    ) -> bool:
        """Store one batch in one transaction; False (nothing stored) if the key was seen."""
        with self._tx() as cur:
            if idempotency_key is not None:
                sql = "INSERT INTO idempotency_keys (key, created_at) VALUES (?, ?)"
                self._run(cur, sql + " ON CONFLICT (key) DO NOTHING", [idempotency_key, now()])
                if cur.rowcount != 1:
                    return False
            for recording_id, attrs in resources:
                self._apply_resource(cur, recording_id, attrs)
            if points:
                self._insert_points(cur, points)
                self._roll_up(cur, points)
                self._count_points(cur, points)
            if events:
                sql = "INSERT INTO events (recording_id, signal, name, time_unix_nano, attributes)"
                rows = [(r, s, n, t, json.dumps(a, default=str)) for r, s, n, t, a in events]
                cur.executemany(self._sql(sql + " VALUES (?, ?, ?, ?, ?)"), rows)
        return True

    def _apply_resource(self, cur: Any, recording_id: str, attrs: dict[str, Any]) -> None:
        fields = from_resource(attrs)
        current = self._fetch(cur, recording_id, lock=True)
        if current is None:
            self._insert_recording(cur, {**fields, "recording_id": recording_id})
            return
        names = ("hyper_parameters", "summary", "status")
        changes: dict[str, Any] = {k: fields[k] for k in names if k in fields}
        self._update(cur, current, changes)

    def _count_points(self, cur: Any, points: Sequence[PointRow]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for row in points:
            counts[row[0], row[1]] = counts.get((row[0], row[1]), 0) + 1
        per_recording: dict[str, int] = {}
        for (rid, _), n in counts.items():
            per_recording[rid] = per_recording.get(rid, 0) + n
        sql = "INSERT INTO series (recording_id, key) VALUES (?, ?)"
        cur.executemany(self._sql(sql + " ON CONFLICT DO NOTHING"), list(counts))
        sql = "UPDATE recordings SET points = points + ?, updated_at = ? WHERE recording_id = ?"
        stamp = now()
        cur.executemany(self._sql(sql), [(n, stamp, rid) for rid, n in per_recording.items()])


def _row_to_recording(row: Sequence[Any]) -> dict[str, Any]:
    recording = dict(zip(_COLUMNS, row, strict=True))
    for name in JSON_FIELDS:
        recording[name] = json.loads(recording[name])
    return recording
