"""Which artifacts a recording names, and which recording's model fills a model_id: two tables.

The bytes live in a `BlobStore` (blobstore.py); what names them lives here, in the database, so
several server processes (`mkv serve --workers N`, or servers sharing one PostgreSQL) name
artifacts of one recording at once without losing any: each naming is one upsert keyed by
(recording, name), atomic in both databases. `artifacts` keeps a row an artifact (kind, digest,
size, media type, metadata as JSON, step), listed in the order first named; `models` keeps the
(recording, artifact name) behind each model_id. `ArtifactQueries` is mixed into `SqlStore`.

A server directory of an older backend kept these as JSON files (`recordings/<id>.json`,
`models/<id>.json` under `--artifacts DIR`): `adopt_json_index` reads them into the tables once,
at start, and removes each file it has read, so two workers starting together import it once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ArtifactQueries", "adopt_json_index", "artifacts_schema"]

log = logging.getLogger(__name__)

_COLUMNS = ("name", "kind", "digest", "size", "media_type", "metadata", "step")
_NAME = (
    f"INSERT INTO artifacts (recording_id, {', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (recording_id, name) DO "
)
_NEEDED = ("name", "kind", "digest", "size", "media_type")
_REPLACE = "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
_MODEL = (
    "INSERT INTO models (model_id, recording_id, name) VALUES (?, ?, ?) ON CONFLICT (model_id) DO "
)
_MOVE_MODEL = "UPDATE SET recording_id = excluded.recording_id, name = excluded.name"
_SELECT_MODEL = (
    "SELECT m.recording_id, r.project_id, m.name FROM models AS m"
    " JOIN recordings AS r ON r.recording_id = m.recording_id WHERE m.model_id = ?"
)


def artifacts_schema(id_column: str) -> list[str]:
    """The CREATE statements; `id_column` numbers rows (the order artifacts were first named)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS artifacts (artifact_id {id_column},
            recording_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
            digest TEXT NOT NULL, size BIGINT NOT NULL, media_type TEXT NOT NULL,
            metadata TEXT NOT NULL, step BIGINT, UNIQUE (recording_id, name))""",
        """CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY,
            recording_id TEXT NOT NULL, name TEXT NOT NULL)""",
    ]


class ArtifactQueries:
    """A recording's artifacts and the models they fill (a mixin of `SqlStore`)."""

    _lock: threading.Lock

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def name_artifact(
        self,
        recording_id: str,
        entry: dict[str, Any],
        model_id: str | None = None,
        *,
        replace: bool = True,
    ) -> None:
        """Name one artifact of a recording (replacing one of that name unless `replace` is
        False) and, given `model_id`, make it that model, in one transaction."""
        values = [recording_id, *(entry.get(c) for c in _COLUMNS)]
        values[6] = json.dumps(entry.get("metadata") or {}, sort_keys=True)
        conflict = _REPLACE if replace else "NOTHING"
        with self._tx() as cur:
            self._run(cur, _NAME + conflict, values)
            if model_id:
                conflict = _MOVE_MODEL if replace else "NOTHING"
                self._run(cur, _MODEL + conflict, [model_id, recording_id, entry["name"]])

    def artifacts(self, recording_id: str) -> list[dict[str, Any]]:
        """The artifacts a recording names, in the order they were first named."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE recording_id = ?"
        with self._reading() as cur:
            rows = self._run(cur, sql + " ORDER BY artifact_id", [recording_id]).fetchall()
        return [_entry(row) for row in rows]

    def model(self, model_id: str) -> dict[str, Any] | None:
        """{model_id, recording_id, project_id, artifact} of a model_id, or None."""
        with self._reading() as cur:
            found = self._run(cur, _SELECT_MODEL, [model_id]).fetchone()
            if found is None:
                return None
            recording_id, project_id, name = found
            sql = f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE recording_id = ? AND name = ?"
            row = self._run(cur, sql, [recording_id, name]).fetchone()
        if row is None:
            return None
        return {
            "model_id": model_id,
            "recording_id": recording_id,
            "project_id": project_id,
            "artifact": _entry(row),
        }


def _entry(row: Sequence[Any]) -> dict[str, Any]:
    entry = dict(zip(_COLUMNS, row, strict=True))
    entry["metadata"] = json.loads(entry["metadata"])
    if entry["step"] is None:
        del entry["step"]
    return entry


class _Index(Protocol):
    def name_artifact(
        self,
        recording_id: str,
        entry: dict[str, Any],
        model_id: str | None = None,
        *,
        replace: bool = True,
    ) -> None: ...


def adopt_json_index(root: Path, store: _Index) -> int:
    """Read an older backend's JSON index under `root` into `store`, once (each file is removed
    once read; a row already in the tables wins); how many artifacts were read."""
    models: dict[tuple[str, str], str] = {}
    for path in sorted((root / "models").glob("*.json")):
        doc = _load(path)
        if isinstance(doc.get("artifact"), dict) and "recording_id" in doc:
            models[(doc["recording_id"], doc["artifact"].get("name"))] = path.stem
    count = 0
    for path in sorted((root / "recordings").glob("*.json")):
        for entry in _load(path).get("artifacts", []):
            if not isinstance(entry, dict) or not all(entry.get(c) is not None for c in _NEEDED):
                continue  # a hand-edited line: nothing a download could serve
            model = models.get((path.stem, entry["name"]))
            store.name_artifact(path.stem, entry, model, replace=False)
            count += 1
        path.unlink(missing_ok=True)
    for path in (root / "models").glob("*.json"):
        path.unlink(missing_ok=True)
    if count:
        log.warning("markov server: read %d artifacts of %s's JSON index into the database",
                    count, root)  # fmt: skip
    return count


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # another worker read it first, or a torn file
        return {}
    return doc if isinstance(doc, dict) else {}
