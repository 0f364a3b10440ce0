"""Several server processes over one PostgreSQL database (`--workers N`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id

T0 = 1_700_000_000_000_000_000


@pytest.mark.postgres
def test_two_workers_over_postgres_store_every_point_once_and_backfill_once(
    tmp_path: Path, own_schema: str
) -> None:
    """mkv serve --workers 2 runs two processes; concurrent batches (and a replay) store each
    point exactly once, and concurrent first reads of a series without buckets, racing a
    batch into it, leave buckets that count every point once."""
    db = own_schema
    # Eight slots a worker: all five bodies may land on one worker, and with the default four
    # one project's share (three) would answer the last a 503 to retry: weather, not this test.
    args = ["--workers", "2", "--max-concurrent-ingest", "8"]
    server = Backend(tmp_path / "workers", db=db, extra_args=args)
    try:
        workers = [
            child
            for child in psutil.Process(server.process.pid).children()  # type: ignore[union-attr]
            if "spawn_main" in " ".join(child.cmdline())
        ]
        assert len(workers) == 2
        rids = [new_id() for _ in range(4)]
        bodies = [(rid, n) for rid in rids for n in range(3)] + [(rids[0], 0)]  # a replay
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda b: _post_batch(server, *b), bodies)) == {200}
        for rid in rids:
            steps = [row["step"] for row in server.records(rid, "loss")]
            assert steps == list(range(3 * BATCH))
        _race_backfill(server, db, rids[1])
    finally:
        server.stop()


BATCH = 5000


def _post_batch(server: Backend, rid: str, n: int) -> int:
    points = [("loss", s, 1.0 / (s + 1), T0 + s) for s in range(n * BATCH, (n + 1) * BATCH)]
    headers = {**server.headers, "Content-Type": "application/json"}
    headers["Idempotency-Key"] = f"{rid}:w:metrics:{n}"
    body = metrics_json_bytes(rid, points)
    return requests.post(
        f"{server.url}/v1/metrics", data=body, headers=headers, timeout=60
    ).status_code


def _race_backfill(server: Backend, db: str, rid: str) -> None:
    """Remove a series' buckets (an older database), then read it from both workers at once
    while a batch lands in it; the buckets must count each point exactly once."""
    series = "(SELECT series_id FROM series WHERE recording_id = %s)"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"DELETE FROM point_buckets WHERE series_id = {series}", [rid])
        conn.execute("UPDATE series SET buckets_ready = 0 WHERE recording_id = %s", [rid])
    query = {"ids": rid, "key": "loss", "max_points": 100}

    def read(_: int) -> int:
        answer = requests.get(
            f"{server.url}/api/v1/series", params=query, headers=server.headers, timeout=60
        )
        return answer.status_code

    with ThreadPoolExecutor(7) as pool:
        landed = pool.submit(_post_batch, server, rid, 3)
        assert set(pool.map(read, range(6))) == {200}
        assert landed.result() == 200
    with psycopg.connect(db, autocommit=True) as conn:
        (stored,) = conn.execute(
            f"SELECT count(*) FROM points WHERE series_id = {series}", [rid]
        ).fetchone()
        sums = conn.execute(
            f"SELECT width, sum(n) FROM point_buckets WHERE series_id = {series} GROUP BY width",
            [rid],
        ).fetchall()
    assert stored == 4 * BATCH
    assert dict(sums) == dict.fromkeys((16, 256, 4096, 65536), stored)
