"""The tables of the backend, and the changes that bring a database of an older backend up to date.

Portable SQL (SQLite >= 3.24 and PostgreSQL). `mkv serve` on a database written by the previous
schema keeps working: `upgrades` lists the columns added since, which the store adds with
`ALTER TABLE … ADD COLUMN` when they are missing. Idempotency keys moved to a new table,
`batch_keys` (scoped to a recording, with a digest of the body); the old global
`idempotency_keys` table is left alone and no longer read (its keys, in the recorder's previous
format, can never be sent again).
"""

from __future__ import annotations

from markov_otel.server.records import IDENTITY_FIELDS

__all__ = ["UPGRADES", "statements"]

UPGRADES: dict[str, list[tuple[str, str]]] = {
    "recordings": [("started_at", "TEXT"), ("ended_at", "TEXT")],
}
"""table -> [(column, type)] added after the first schema; NULL in rows written before."""


def statements(value_type: str) -> list[str]:
    """CREATE statements; `value_type` is the point value column's type in this database."""
    identity = ", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in IDENTITY_FIELDS)
    return [
        f"""CREATE TABLE IF NOT EXISTS recordings (recording_id TEXT PRIMARY KEY, {identity},
            metadata TEXT NOT NULL, hyper_parameters TEXT NOT NULL, summary TEXT NOT NULL,
            status TEXT NOT NULL, requirements TEXT, points BIGINT NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, started_at TEXT,
            ended_at TEXT)""",
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
        """CREATE TABLE IF NOT EXISTS batch_keys (recording_id TEXT NOT NULL, key TEXT NOT NULL,
            digest TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (recording_id, key))""",
    ]
