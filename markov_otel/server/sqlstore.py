"""The storage logic both databases share: recordings, points, alerts, batches and their keys.

SQL here is portable (SQLite >= 3.24 and PostgreSQL): `?` placeholders, which the PostgreSQL store
rewrites to `%s`; JSON kept as text; non-finite point values in a text column beside the number
(SQLite stores a NaN REAL as NULL). One connection guarded by a lock: writes are serialised by
both databases anyway, and a reference backend should be simple before it is clever.

Every write that may create a recording claims it in the same transaction that checks who owns
it: `INSERT … ON CONFLICT DO NOTHING`, then the row is read back locked (`FOR UPDATE` on
PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the write lock), and a token scoped to
another project rolls the whole transaction back. So two projects racing for one new id never
both win, across threads and across server processes sharing a database.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from markov_otel.rules import next_status
from markov_otel.server.artifactindex import ArtifactQueries, artifacts_schema
from markov_otel.server.blocks import block, join, pack
from markov_otel.server.distributions import DISTRIBUTION, TEXT
from markov_otel.server.identity import event_identity, unseen
from markov_otel.server.lanes import ReaderPool
from markov_otel.server.marks import MarksQueries, marks_schema
from markov_otel.server.points import COLUMNS_A_ROW, PointRow, SeriesPoints
from markov_otel.server.records import (
    IDENTITY_FIELDS,
    JSON_FIELDS,
    TIME_FIELDS,
    now,
    read_json,
    read_params,
)
from markov_otel.server.rollups import Bucket, BucketKey, fold_series, upper_levels
from markov_otel.server.schema import EVENT_IDENTITY, UPGRADES, statements, to_series_ids
from markov_otel.server.seriesstore import SERIES_ID, SeriesQueries, series_schema

log = logging.getLogger(__name__)

__all__ = [
    "BatchKey",
    "EventRow",
    "Forbidden",
    "KeyReused",
    "PointRow",
    "SeriesPoints",
    "SqlStore",
    "StoreRefused",
]
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
    *TIME_FIELDS,
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM recordings"
_INSERT_POINTS = "INSERT INTO points (series_id, step, value, value_text, time_unix_nano) VALUES "
_INSERT_WITH_ATTRS = (
    "INSERT INTO points (series_id, step, value, value_text, time_unix_nano, attrs)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_ROW = "(?, ?, ?, ?, ?)"
_ROWS_A_STATEMENT = 160
_SERIES_ROW = "SELECT series_id FROM series WHERE recording_id = ? AND key = ?"
_SERIES_ROWS = "SELECT key, series_id FROM series WHERE recording_id = ?"
_KEYS_A_STATEMENT = 500  # SQLite before 3.32 takes at most 999 parameters
# A distribution or a text already stored (the unique events_by_identity) is skipped.
_INSERT_EVENT = (
    "INSERT INTO events (recording_id, signal, name, time_unix_nano, attributes, identity)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_IDENTIFIED = (DISTRIBUTION, TEXT)
# A series created by a batch: every point of it passes the batch's buckets, so they are complete.
# ... and `blocks_ready` when the store keeps blocks (`keeps_blocks`): every point passes there.
_NEW_SERIES = "INSERT INTO series (recording_id, key, buckets_ready, blocks_ready)"
_NEW_SERIES += " VALUES (?, ?, 1, ?)"
_INSERT_BLOCK = "INSERT INTO point_blocks (series_id, first_step, first_time, last_step, last_time,"
_INSERT_BLOCK += " packed) VALUES (?, ?, ?, ?, ?, ?)"
# A series' blocks (none unless it is blocks_ready), in the order they were stored.
_BLOCKS = (
    "SELECT b.first_step, b.first_time, b.last_step, b.last_time, b.packed FROM series s"
    " JOIN point_blocks b ON b.series_id = s.series_id"
    " WHERE s.recording_id = ? AND s.key = ? AND s.blocks_ready = 1 ORDER BY b.block_id"
)


class StoreRefused(ValueError):
    """The database cannot hold a value of the request (e.g. NUL in PostgreSQL text): a 400."""


class Forbidden(Exception):
    """The recording exists and belongs to a project the request's token may not write."""

    def __init__(self, recording_id: str, scope: str) -> None:
        super().__init__(
            f"this token may only write recordings of project {scope!r} and recording "
            f"{recording_id!r} is not one; a new recording needs project_id (the resource "
            f"attribute markov.project.id) = {scope!r}"
        )
        self.recording_id = recording_id


class KeyReused(Exception):
    """An Idempotency-Key already stored in this recording with a different body."""


@dataclass(frozen=True)
class BatchKey:
    """A batch's Idempotency-Key and the SHA-256 (hex) of its decoded body."""

    key: str
    digest: str


class SqlStore(SeriesQueries, MarksQueries, ArtifactQueries):
    """Recordings and their points in a SQL database; subclasses supply the connection."""

    value_type = "REAL"
    id_column = "INTEGER PRIMARY KEY"
    blob_type = "BLOB"
    lock_clause = ""
    keeps_blocks = False
    """Whether ingest also keeps each batch's points of a series packed (`point_blocks`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the writer connection's: ingest, registers, PATCHes
        self._readers: ReaderPool | None = None  # reads' own connections, when the store has them
        self._reads, self._reads_lock = 0, threading.Lock()

    @property
    def reads(self) -> int:
        """How many reads (cursors for a read) this store has begun: what the live pages'
        sharing saves is counted with it (tests, benchmarks)."""
        return self._reads

    # -- what a database supplies ------------------------------------------------------------
    def _transaction(self) -> AbstractContextManager[Any]:
        """A context that runs its body in one transaction and yields a cursor."""
        raise NotImplementedError

    def _cursor(self) -> Any:
        """A cursor for reads outside a transaction."""
        raise NotImplementedError

    def _columns(self, cur: Any, table: str) -> set[str]:
        """The column names `table` has in this database."""
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def _insert_points(
        self, cur: Any, points: Sequence[tuple[int, SeriesPoints]], meanwhile: Callable[[], None]
    ) -> None:
        """Insert (series id, its points) of a batch, and call `meanwhile` (the fold into
        buckets) where it overlaps the database's work: here, after the inserts."""
        for series_id, series in points:
            self._insert_series(cur, series_id, series)
        self._insert_blocks(cur, points)
        meanwhile()

    def _insert_blocks(self, cur: Any, points: Sequence[tuple[int, SeriesPoints]]) -> None:
        """Keep the batch's points of each series packed too (blocks.py), when the store does."""
        if self.keeps_blocks:
            rows = [
                (series_id, *block(s.steps, s.values, s.times, s.texts)) for series_id, s in points
            ]
            cur.executemany(self._sql(_INSERT_BLOCK), rows)

    def _insert_series(self, cur: Any, series_id: int, series: SeriesPoints) -> None:
        """Insert one series' points: 160 rows a statement, or (points with attributes, which
        the recorder never sends) a row at a time with their attributes."""
        if series.attrs is not None:
            rows = [(*row, series.attrs) for row in series.rows(series_id)]
            cur.executemany(self._sql(_INSERT_WITH_ATTRS), rows)
            return
        # 160 rows a statement (800 parameters: under SQLite's oldest limit of 999): one
        # statement's VM run per 160 rows instead of per row is ~35% faster than executemany.
        chunk = self._sql(_INSERT_POINTS + ", ".join([_ROW] * _ROWS_A_STATEMENT))
        size = _ROWS_A_STATEMENT * COLUMNS_A_ROW
        flat = series.flat(series_id)
        whole = len(flat) - len(flat) % size
        for start in range(0, whole, size):
            cur.execute(chunk, flat[start : start + size])
        if whole < len(flat):  # the rest in one statement of its own size
            rest = (len(flat) - whole) // COLUMNS_A_ROW
            cur.execute(self._sql(_INSERT_POINTS + ", ".join([_ROW] * rest)), flat[whole:])

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock, self._transaction() as cur:
            yield cur

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A cursor for a read: on a reader connection, so it never waits for the writer's lock
        (the writer's, under that lock, only for a store without reader connections)."""
        with self._reads_lock:
            self._reads += 1
        if self._readers is None:
            with self._lock:
                yield self._cursor()
            return
        with self._readers.borrow() as conn, closing(conn.cursor()) as cur:
            yield cur

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _schema_lock(self, cur: Any) -> None:
        """Hold, until the transaction ends, the lock that serialises schema changes."""

    def create_schema(self) -> None:
        """Create the tables if they do not exist; move an older schema's rows over, add the
        columns it lacked (see schema.py)."""
        with self._tx() as cur:
            self._schema_lock(cur)
            before: list[str] = []
            after: list[str] = []
            had = self._columns(cur, "points")
            had_events = self._columns(cur, "events")
            if "recording_id" in had:  # points keyed by text
                # Said first: a big database takes a while (~2 s a million points on SQLite),
                # and a server that is silent meanwhile looks hung.
                log.warning(
                    "markov server: moving this database's points to series ids, once (about 2 s "
                    "a million points); the server answers when it is done"
                )
                before, after = to_series_ids(bool(self._columns(cur, "series")))
            creates = statements(self.value_type, self.id_column, self.blob_type)
            for statement in [
                *before,
                *creates,
                *series_schema(self.value_type),
                *marks_schema(),
                *artifacts_schema(self.id_column),
                *after,
            ]:
                self._run(cur, statement)
            for table, columns in UPGRADES.items():
                have = self._columns(cur, table)
                for name, kind in columns:
                    if name not in have:
                        self._run(cur, f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if had and "attrs" not in had:  # its points were stored without their attributes
                self._run(cur, "UPDATE series SET attrs_unknown = 1")
            self._run(cur, EVENT_IDENTITY)
            if had_events and "identity" not in had_events:
                self._identify_events(cur)

    def _identify_events(self, cur: Any) -> None:
        """Give the distributions and texts of a database written before they had an identity
        theirs, each identity once (a keyless replay then stored some twice): a recording at a
        time, its rows read, deleted and written back with their identity."""
        names = ", ".join("?" * len(_IDENTIFIED))
        sql = f"SELECT DISTINCT recording_id FROM events WHERE name IN ({names})"
        for (rid,) in self._run(cur, sql, _IDENTIFIED).fetchall():
            where = f" FROM events WHERE recording_id = ? AND name IN ({names})"
            sql = "SELECT signal, name, time_unix_nano, attributes" + where
            rows = self._run(cur, sql + " ORDER BY time_unix_nano", [rid, *_IDENTIFIED])
            rows = rows.fetchall()
            self._run(cur, "DELETE" + where, [rid, *_IDENTIFIED])
            identified = [
                (rid, signal, name, ns, attrs, _stored_identity(name, int(ns), attrs))
                for signal, name, ns, attrs in rows
            ]
            cur.executemany(self._sql(_INSERT_EVENT), identified)

    # -- recordings ------------------------------------------------------------------------
    def register(
        self, fields: dict[str, Any], scope: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Register a recording unless its id exists; return (recording, created).

        `scope` is the one project the caller may write (None: every project); a recording of
        another project raises Forbidden and nothing is written.
        """
        with self._tx() as cur:
            created = self._claim(cur, fields["recording_id"], fields, scope)
            row = self._fetch(cur, fields["recording_id"])
        assert row is not None
        return row, created

    def _claim(
        self, cur: Any, recording_id: str, fields: dict[str, Any], scope: str | None
    ) -> bool:
        """Create the recording if new, lock its row, check the scope; True when created."""
        created = self._insert_recording(cur, {**fields, "recording_id": recording_id})
        sql = "SELECT project_id FROM recordings WHERE recording_id = ?" + self.lock_clause
        (project,) = self._run(cur, sql, [recording_id]).fetchone()
        if scope is not None and project != scope:
            raise Forbidden(recording_id, scope)
        return created

    def _insert_recording(self, cur: Any, fields: dict[str, Any]) -> bool:
        stamp = now()
        values = [fields["recording_id"]]
        values += [str(fields.get(name) or "") for name in IDENTITY_FIELDS]
        values += [json.dumps(fields.get(name) or {}) for name in JSON_FIELDS]
        values += [fields.get("status") or "running", 0, stamp, stamp]
        values += [fields.get(name) for name in TIME_FIELDS]
        marks = ", ".join("?" * len(values))
        sql = f"INSERT INTO recordings ({', '.join(_COLUMNS)}) VALUES ({marks})"
        self._run(cur, sql + " ON CONFLICT (recording_id) DO NOTHING", values)
        return bool(cur.rowcount == 1)

    def get(self, recording_id: str) -> dict[str, Any] | None:
        """The recording (with its keys), or None."""
        with self._reading() as cur:
            return self._fetch(cur, recording_id)

    def _fetch(
        self, cur: Any, recording_id: str, lock: bool = False, keys: bool = True
    ) -> dict[str, Any] | None:
        """The recording's row, with its keys unless `keys` is False (a batch's own update)."""
        sql = _SELECT + " WHERE recording_id = ?" + (self.lock_clause if lock else "")
        row = self._run(cur, sql, [recording_id]).fetchone()
        if row is None:
            return None
        recording = _row_to_recording(row)
        if not keys:
            return recording
        listed = self._run(
            cur, "SELECT key FROM series WHERE recording_id = ? ORDER BY key", [recording_id]
        )  # a key without points (a metric of no data points) is listed too, as before
        recording["keys"] = [k for (k,) in listed.fetchall()]
        return recording

    def list_recordings(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """All recordings (of a project), newest start first; without `keys`."""
        where, params = ("", []) if project_id is None else (" WHERE project_id = ?", [project_id])
        order = " ORDER BY COALESCE(started_at, created_at) DESC, created_at DESC, recording_id"
        with self._reading() as cur:
            rows = self._run(cur, _SELECT + where + order, params).fetchall()
        return [_row_to_recording(row) for row in rows]

    def recordings_state(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """What a runs table shows changes with: each recording's id, updated_at, points and
        status (a batch, a PATCH and a mark each rewrite updated_at), without reading the
        recordings' JSON: the cheap half of a live runs table's 304."""
        sql = "SELECT recording_id, updated_at, points, status FROM recordings"
        where, params = ("", []) if project_id is None else (" WHERE project_id = ?", [project_id])
        with self._reading() as cur:
            rows = self._run(cur, sql + where + " ORDER BY recording_id", params).fetchall()
        return [
            {"recording_id": r, "updated_at": u, "points": p, "status": s} for r, u, p, s in rows
        ]

    def series_keys(self, project_id: str | None = None) -> list[str]:
        """Every key any recording (of a project) has points of, sorted: the runs table's
        metric columns."""
        sql = "SELECT DISTINCT key FROM series"
        params: list[Any] = []
        if project_id is not None:
            sql += " WHERE recording_id IN"
            sql += " (SELECT recording_id FROM recordings WHERE project_id = ?)"
            params = [project_id]
        with self._reading() as cur:
            rows = self._run(cur, sql + " ORDER BY key", params).fetchall()
        return [key for (key,) in rows]

    def patch(
        self, recording_id: str, changes: dict[str, Any], scope: str | None = None
    ) -> dict[str, Any] | None:
        """Merge `changes` (checked PATCH fields) into a recording; None when it does not exist
        or belongs to a project outside `scope`. An explicit status may leave a terminal one
        (`next_status`: a failed one only for running)."""
        with self._tx() as cur:
            current = self._fetch(cur, recording_id, lock=True)
            if current is None or (scope is not None and current["project_id"] != scope):
                return None
            if "status" in changes:
                status = next_status(current["status"], changes["status"], explicit=True)
                changes = {**changes, "status": status}
            self._update(cur, current, changes)
            self._set_marks(cur, recording_id, changes)
            if "requirements" in changes:
                sql = "UPDATE recordings SET requirements = ? WHERE recording_id = ?"
                self._run(cur, sql, [json.dumps(changes["requirements"]), recording_id])
            for alert in changes.get("alerts") or ():
                self._add_alert(cur, recording_id, alert)
            return self._fetch(cur, recording_id)

    def _update(self, cur: Any, current: dict[str, Any], changes: dict[str, Any]) -> None:
        sets: dict[str, Any] = {}
        for name in JSON_FIELDS:
            merged = {**current[name], **(changes.get(name) or {})}
            if merged != current[name]:  # a batch mostly repeats them: no row version for that
                sets[name] = json.dumps(merged)
        for name in ("status", "notes", "name", *TIME_FIELDS):
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
        """The recording's alerts in firing order (an unreadable stored alert is left out)."""
        sql = "SELECT body FROM alerts WHERE recording_id = ? ORDER BY seq"
        with self._reading() as cur:
            rows = self._run(cur, sql, [recording_id]).fetchall()
        alerts = (read_json(body, f"alert of {recording_id}") for (body,) in rows)
        return [alert for alert in alerts if isinstance(alert, dict)]

    def requirements(self, recording_id: str) -> dict[str, Any] | None:
        """The stored environment.json of a recording, or None."""
        sql = "SELECT requirements FROM recordings WHERE recording_id = ?"
        with self._reading() as cur:
            row = self._run(cur, sql, [recording_id]).fetchone()
        found = None if row is None else read_json(row[0], f"requirements of {recording_id}")
        return found if isinstance(found, dict) else None

    # -- points and events -----------------------------------------------------------------
    def records(self, recording_id: str, key: str) -> list[tuple[int, float | int | str, int]]:
        """(step, value, time_unix_nano) of one key, by step then time; non-finite as text."""
        sql = (
            "SELECT step, value, value_text, time_unix_nano FROM points"
            f" WHERE series_id = {SERIES_ID} ORDER BY step, time_unix_nano"
        )
        with self._reading() as cur:
            rows = self._run(cur, sql, [recording_id, key]).fetchall()
        return [(s, t if t is not None else v, ns) for s, v, t, ns in rows]

    def packed_points(self, recording_id: str, key: str) -> bytes:
        """Every point of one key by step then time, packed (blocks.py): joined from its blocks
        when the store keeps them and they follow each other in step order (the usual: a
        recorder's steps rise); else from its rows."""
        if self.keeps_blocks:
            with self._reading() as cur:
                found = self._run(cur, _BLOCKS, [recording_id, key]).fetchall()
            if found and all(a[2:4] <= b[0:2] for a, b in pairwise(found)):
                return join([b[4] for b in found])
        return pack(self.point_rows(recording_id, key))

    def events_named(self, recording_id: str, name: str) -> list[tuple[int, dict[str, Any]]]:
        """(time_unix_nano, attributes) of a recording's events of one name, oldest first."""
        sql = (
            "SELECT time_unix_nano, attributes FROM events WHERE recording_id = ? AND name = ?"
            " ORDER BY time_unix_nano"
        )
        with self._reading() as cur:
            rows = self._run(cur, sql, [recording_id, name]).fetchall()
        return [(int(ns), json.loads(attrs)) for ns, attrs in rows]

    def ingest(
        self,
        key: BatchKey | None,
        resources: Sequence[tuple[str, dict[str, Any]]],
        points: Iterable[SeriesPoints] = (),
        events: Sequence[EventRow] = (),
        scope: str | None = None,
    ) -> bool:
        """Store one batch in one transaction; False (nothing stored) for a replay of its key.

        `resources` are (recording id, checked resource fields). Unknown recordings are created
        from their fields; one outside `scope` raises Forbidden, a key already stored in one of
        the batch's recordings with another digest raises KeyReused; both store nothing.
        `points` may be a generator: it is walked once, after those checks (an exception it
        raises rolls the batch back), and not at all for a replay. A series (recording, key)
        new to the database gets its id here.
        """
        with self._tx() as cur:
            first: dict[str, dict[str, Any]] = {}
            for rid, fields in resources:
                first.setdefault(rid, fields)
            created = {rid for rid in sorted(first) if self._claim(cur, rid, first[rid], scope)}
            if key is not None and self._replayed(cur, key, sorted(first)):
                return False
            for rid, fields in resources:
                if rid in created and fields is first[rid]:
                    continue  # its row was just made from these fields
                self._apply_resource(cur, rid, fields)
            if key is not None:
                sql = "INSERT INTO batch_keys (recording_id, key, digest, created_at)"
                rows = [(rid, key.key, key.digest, now()) for rid in sorted(first)]
                cur.executemany(self._sql(sql + " VALUES (?, ?, ?, ?)"), rows)
            batch = list(points)
            if batch:
                self._store_points(cur, batch)
            if events:  # a distribution or text stored before is skipped (its identity)
                event_rows = [
                    (r, s, n, t, json.dumps(a), event_identity(n, t, a)) for r, s, n, t, a in events
                ]
                cur.executemany(self._sql(_INSERT_EVENT), event_rows)
        return True

    def _replayed(self, cur: Any, key: BatchKey, recording_ids: list[str]) -> bool:
        """True when this key and body were stored before; KeyReused when another body was."""
        sql = "SELECT digest FROM batch_keys WHERE recording_id = ? AND key = ?"
        seen = False
        for rid in recording_ids:
            row = self._run(cur, sql, [rid, key.key]).fetchone()
            if row is not None and row[0] != key.digest:
                raise KeyReused(
                    f"Idempotency-Key {key.key!r} was used in recording {rid!r} for a different "
                    "body; a retry must send the same bytes, a new batch needs a new key"
                )
            seen = seen or row is not None
        return seen

    def _apply_resource(self, cur: Any, recording_id: str, fields: dict[str, Any]) -> None:
        """Merge a batch's resource fields into an existing recording (its row is locked).

        A batch never moves a finished recording back to running (`next_status`), and sets a
        start or end time only where the recording has none.
        """
        current = self._fetch(cur, recording_id, keys=False)
        assert current is not None
        changes: dict[str, Any] = {}
        for name in ("hyper_parameters", "summary"):
            if name in fields:
                changes[name] = fields[name]
        if "status" in fields:
            changes["status"] = next_status(current["status"], fields["status"], explicit=False)
        for name in TIME_FIELDS:
            if fields.get(name) and not current[name]:
                changes[name] = fields[name]
        self._update(cur, current, changes)

    def _store_points(self, cur: Any, batch: list[SeriesPoints]) -> None:
        """Insert the batch's points the database lacks (identity.py), fold them into the step
        buckets, count them: a point stored before changes nothing."""
        ids = self._series_ids(cur, {(s.recording_id, s.key) for s in batch})
        numbered = unseen(cur, self._run, [(ids[s.recording_id, s.key], s) for s in batch])
        if not numbered:
            return
        buckets: dict[BucketKey, Bucket] = {}  # the batch's step buckets, every level
        per_recording: dict[str, int] = {}

        def fold() -> None:
            finest: dict[BucketKey, Bucket] = {}
            for series_id, series in numbered:
                fold_series(series, series_id, finest)
                rid = series.recording_id
                per_recording[rid] = per_recording.get(rid, 0) + len(series)
            buckets.update(upper_levels(finest))

        # The fold runs while the database inserts the points (PostgreSQL's COPY). A series the
        # batch created is `buckets_ready` from its start: every point of it passes here.
        self._insert_points(cur, numbered, meanwhile=fold)
        self._upsert_buckets(cur, buckets)
        sql = "UPDATE recordings SET points = points + ?, updated_at = ? WHERE recording_id = ?"
        stamp = now()
        cur.executemany(self._sql(sql), [(n, stamp, rid) for rid, n in per_recording.items()])

    def _series_ids(self, cur: Any, names: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The id of each series (recording id, key), created when new (in sorted order), the
        known ones read in one statement a recording. Safe across processes: the batch holds
        the lock of each of its recordings' rows."""
        ids: dict[tuple[str, str], int] = {}
        keys_of: dict[str, list[str]] = {}
        for rid, key in sorted(names):
            keys_of.setdefault(rid, []).append(key)
        for rid, keys in keys_of.items():
            for lo in range(0, len(keys), _KEYS_A_STATEMENT):
                chunk = keys[lo : lo + _KEYS_A_STATEMENT]
                sql = _SERIES_ROWS + f" AND key IN ({', '.join('?' * len(chunk))})"
                for key, series_id in self._run(cur, sql, [rid, *chunk]).fetchall():
                    ids[rid, key] = int(series_id)
        for name in sorted(names - ids.keys()):
            self._run(cur, _NEW_SERIES, [*name, int(self.keeps_blocks)])
            ids[name] = int(self._run(cur, _SERIES_ROW, name).fetchone()[0])
        return ids


def _stored_identity(name: str, time_unix_nano: int, attributes: str) -> str | None:
    """The identity of an event row stored as JSON text (None when the text is unreadable)."""
    attrs = read_json(attributes, f"{name} event")
    return event_identity(name, time_unix_nano, attrs) if isinstance(attrs, dict) else None


def _row_to_recording(row: Sequence[Any]) -> dict[str, Any]:
    """A recording from its row; parameter columns read in the flat form, never raising."""
    recording = dict(zip(_COLUMNS, row, strict=True))
    for name in JSON_FIELDS:
        recording[name] = read_params(recording[name], f"{name} of {recording['recording_id']}")
    return recording
