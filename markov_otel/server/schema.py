"""The tables of the backend, and the changes that bring a database of an older backend up to date.

Portable SQL (SQLite >= 3.24 and PostgreSQL). `mkv serve` on a database written by an older
schema keeps working:

- `UPGRADES` lists the columns added since, which the store adds with `ALTER TABLE … ADD COLUMN`
  when they are missing. `points.attrs` (a point's other attributes, part of its identity) came
  late: the series of a database without it are marked `attrs_unknown` (see identity.py).
  `events.identity` (a distribution's or a text's identity, identity.py) came later still: the
  store fills it in for the rows of a database without it, keeping each identity once
  (`identify_events`), then `EVENT_IDENTITY` holds it unique.
- Points are keyed by a small integer series id (`series.series_id`, one per (recording, key))
  instead of two text columns: the index every point goes into is a third of the size and
  SQLite inserts ~1.6x the rows per second. A database whose `points` still has `recording_id`
  is moved over in place, in one transaction on start (`to_series_ids`); its step buckets are
  dropped and rebuilt on each series' first read, as for a series stored before buckets existed.
- Idempotency keys moved to `batch_keys` (scoped to a recording, with a digest of the body); the
  old global `idempotency_keys` table is left alone and no longer read (its keys, in the
  recorder's previous format, can never be sent again).
"""

from __future__ import annotations

from markov_otel.server.records import IDENTITY_FIELDS

__all__ = ["EVENT_IDENTITY", "UPGRADES", "statements", "to_series_ids"]

UPGRADES: dict[str, list[tuple[str, str]]] = {
    "recordings": [("started_at", "TEXT"), ("ended_at", "TEXT")],
    "points": [("attrs", "TEXT")],
    "series": [
        ("attrs_unknown", "INTEGER NOT NULL DEFAULT 0"),
        ("blocks_ready", "INTEGER NOT NULL DEFAULT 0"),
    ],
    "events": [("identity", "TEXT")],
}
"""table -> [(column, type)] added after the first schema; NULL in rows written before."""

EVENT_IDENTITY = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_identity ON events (recording_id, identity)"
    " WHERE identity IS NOT NULL"
)
"""Each distribution and text once (identity.event_identity); other events have no identity.
Made after `UPGRADES`, which gives an older database the column."""


def statements(value_type: str, id_column: str, blob_type: str) -> list[str]:
    """CREATE statements; `value_type` is the point value column's type in this database and
    `id_column` the definition of a primary key it numbers itself (SQLite's INTEGER PRIMARY KEY,
    PostgreSQL's identity column), `blob_type` its type of bytes."""
    identity = ", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in IDENTITY_FIELDS)
    return [
        f"""CREATE TABLE IF NOT EXISTS recordings (recording_id TEXT PRIMARY KEY, {identity},
            metadata TEXT NOT NULL, hyper_parameters TEXT NOT NULL, summary TEXT NOT NULL,
            status TEXT NOT NULL, requirements TEXT, points BIGINT NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, started_at TEXT,
            ended_at TEXT)""",
        # buckets_ready: 1 once point_buckets hold every point of the series (seriesstore.py).
        # attrs_unknown: 1 when its older points were stored without attributes (identity.py).
        # blocks_ready: 1 when point_blocks hold every point of the series too (blocks.py).
        f"""CREATE TABLE IF NOT EXISTS series (series_id {id_column},
            recording_id TEXT NOT NULL, key TEXT NOT NULL,
            buckets_ready INTEGER NOT NULL DEFAULT 0, attrs_unknown INTEGER NOT NULL DEFAULT 0,
            blocks_ready INTEGER NOT NULL DEFAULT 0, UNIQUE (recording_id, key))""",
        # attrs: the point's other attributes (otlp.attributes_identity), NULL when none.
        f"""CREATE TABLE IF NOT EXISTS points (series_id BIGINT NOT NULL,
            step BIGINT NOT NULL, value {value_type}, value_text TEXT,
            time_unix_nano BIGINT NOT NULL, attrs TEXT)""",
        "CREATE INDEX IF NOT EXISTS points_by_series ON points (series_id, step, time_unix_nano)",
        # Each batch's points of a series packed (blocks.py), beside its rows, in block_id order.
        f"""CREATE TABLE IF NOT EXISTS point_blocks (block_id {id_column},
            series_id BIGINT NOT NULL,
            first_step BIGINT NOT NULL, first_time BIGINT NOT NULL, last_step BIGINT NOT NULL,
            last_time BIGINT NOT NULL, packed {blob_type} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS point_blocks_by_series ON point_blocks (series_id, block_id)",
        """CREATE TABLE IF NOT EXISTS alerts (recording_id TEXT NOT NULL, alert_id TEXT NOT NULL,
            seq BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (recording_id, alert_id))""",
        # identity: a distribution's or a text's (identity.event_identity), NULL for others.
        """CREATE TABLE IF NOT EXISTS events (recording_id TEXT NOT NULL, signal TEXT NOT NULL,
            name TEXT NOT NULL, time_unix_nano BIGINT NOT NULL, attributes TEXT NOT NULL,
            identity TEXT)""",
        "CREATE INDEX IF NOT EXISTS events_by_name ON events (recording_id, name)",
        """CREATE TABLE IF NOT EXISTS batch_keys (recording_id TEXT NOT NULL, key TEXT NOT NULL,
            digest TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (recording_id, key))""",
    ]


def to_series_ids(has_series: bool) -> tuple[list[str], list[str]]:
    """Points keyed by (recording_id, key) text columns -> by series id, in place: the
    statements to run before the CREATE statements (the old tables step aside; the bucket
    tables, derived data, go) and after them (rows copied over, old tables dropped).
    `has_series`: the old database has a `series` table."""
    before = [
        "DROP INDEX IF EXISTS points_by_key",
        "ALTER TABLE points RENAME TO points_by_text",
        "DROP TABLE IF EXISTS point_buckets",
        "DROP TABLE IF EXISTS point_buckets_ready",
    ]
    after = [
        # Every series that has points, numbered in (recording, key) order.
        "INSERT INTO series (recording_id, key) SELECT DISTINCT recording_id, key"
        " FROM points_by_text ORDER BY recording_id, key",
        "INSERT INTO points (series_id, step, value, value_text, time_unix_nano)"
        " SELECT s.series_id, p.step, p.value, p.value_text, p.time_unix_nano"
        " FROM points_by_text AS p JOIN series AS s"
        " ON s.recording_id = p.recording_id AND s.key = p.key",
        "DROP TABLE points_by_text",
    ]
    if has_series:  # and the series without points (a metric of no data points)
        # Copied, not renamed: PostgreSQL would keep its primary key's name, series_pkey.
        before[:0] = [
            "CREATE TABLE series_by_text AS SELECT recording_id, key FROM series",
            "DROP TABLE series",
        ]
        after[1:1] = [  # WHERE true: SQLite reads ON CONFLICT after a SELECT as an upsert then
            "INSERT INTO series (recording_id, key) SELECT recording_id, key FROM series_by_text"
            " WHERE true ON CONFLICT (recording_id, key) DO NOTHING",
            "DROP TABLE series_by_text",
        ]
    return before, after
