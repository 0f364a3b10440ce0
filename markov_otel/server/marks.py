"""What a team marks on its runs after the fact: tags, archived, and deleting a run outright.

Kept in a table of its own (`recording_marks`: recording id, tags as a JSON list, archived), so
ingest never touches it and a database of an older backend just gains the table. Deleting a run
removes every row of it: recording, series, points, step buckets, alerts, events, batch keys,
marks and the names of its artifacts and model (not the bytes, which other runs may share), in
one transaction. `MarksQueries` is mixed into `SqlStore`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import MAX_NAME_BYTES, check_text
from markov_otel.server.records import now

__all__ = ["MarksQueries", "check_tags", "marks_schema"]

MAX_TAGS = 50


def marks_schema() -> list[str]:
    return [
        """CREATE TABLE IF NOT EXISTS recording_marks (recording_id TEXT PRIMARY KEY,
            tags TEXT NOT NULL DEFAULT '[]', archived INTEGER NOT NULL DEFAULT 0)"""
    ]


def check_tags(value: Any) -> list[str]:
    """A PATCH body's `tags`: a list of up to 50 short texts (duplicates dropped, order kept)."""
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise ConfigError('tags must be a list of non-empty texts, e.g. ["baseline", "v2"]')
    if len(value) > MAX_TAGS:
        raise ConfigError(f"tags holds {len(value)} tags; at most {MAX_TAGS}")
    return list(dict.fromkeys(check_text("tag", t.strip(), MAX_NAME_BYTES) for t in value))


class MarksQueries:
    """Tags, archived and deletion (a mixin of `SqlStore`)."""

    _lock: threading.Lock

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _cursor(self) -> Any:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def marks(self, recording_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """{id: {"tags": [...], "archived": bool}} of the recordings that have marks."""
        sql, params = "SELECT recording_id, tags, archived FROM recording_marks", []
        if recording_ids is not None:
            if not recording_ids:
                return {}
            sql += f" WHERE recording_id IN ({', '.join('?' * len(recording_ids))})"
            params = list(recording_ids)
        with self._reading() as cur:
            rows = self._run(cur, sql, params).fetchall()
        return {
            rid: {"tags": _tags(tags), "archived": bool(archived)} for rid, tags, archived in rows
        }

    def _set_marks(self, cur: Any, recording_id: str, changes: dict[str, Any]) -> None:
        """Write `tags` and/or `archived` of `changes` (inside the caller's transaction)."""
        if "tags" not in changes and "archived" not in changes:
            return
        found = self._run(
            cur, "SELECT tags, archived FROM recording_marks WHERE recording_id = ?", [recording_id]
        ).fetchone()
        tags = changes.get("tags", _tags(found[0]) if found else [])
        archived = changes.get("archived", bool(found[1]) if found else False)
        sql = "INSERT INTO recording_marks (recording_id, tags, archived) VALUES (?, ?, ?)"
        sql += " ON CONFLICT (recording_id) DO UPDATE SET tags = excluded.tags,"
        sql += " archived = excluded.archived"
        self._run(cur, sql, [recording_id, json.dumps(tags), int(bool(archived))])
        if found is None or (_tags(found[0]), bool(found[1])) != (tags, bool(archived)):
            # a mark is a change of the recording: open runs tables see it by updated_at
            sql = "UPDATE recordings SET updated_at = ? WHERE recording_id = ?"
            self._run(cur, sql, [now(), recording_id])

    def delete(self, recording_id: str, scope: str | None = None) -> bool:
        """Remove a recording and everything of it; False when it does not exist or belongs to
        a project outside `scope`."""
        with self._tx() as cur:
            row = self._run(
                cur, "SELECT project_id FROM recordings WHERE recording_id = ?", [recording_id]
            ).fetchone()
            if row is None or (scope is not None and row[0] != scope):
                return False
            series = "SELECT series_id FROM series WHERE recording_id = ?"
            for table in ("points", "point_buckets", "point_blocks"):
                self._run(cur, f"DELETE FROM {table} WHERE series_id IN ({series})", [recording_id])
            tables = ("series", "alerts", "events", "batch_keys", "recording_marks")
            for table in (*tables, "artifacts", "models"):
                self._run(cur, f"DELETE FROM {table} WHERE recording_id = ?", [recording_id])
            self._run(cur, "DELETE FROM recordings WHERE recording_id = ?", [recording_id])
            return True


def _tags(stored: Any) -> list[str]:
    try:
        found = json.loads(stored)
    except (TypeError, ValueError):
        return []
    return [str(t) for t in found] if isinstance(found, list) else []
