"""PostgreSQL specifics: the store survives its database connection being cut."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series


@pytest.mark.postgres
def test_backend_reconnects_after_the_database_drops_it(own_database: str, tmp_path: Path) -> None:
    """After PostgreSQL terminates the backend's session, the next requests are served again,
    a batch's points included (its new session has the bucket staging table too)."""
    server = Backend(tmp_path / "pg", db=own_database)
    try:
        rid = new_id()
        body = metrics_json_bytes(rid, series("x", 10))
        headers = {**server.headers, "Content-Type": "application/json"}
        assert (
            httpx.post(server.url + "/v1/metrics", content=body, headers=headers).status_code == 200
        )
        with psycopg.connect(own_database, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        url = f"{server.url}/api/v1/recordings/{rid}/records"
        answers = [httpx.get(url, params={"key": "x"}, headers=server.headers) for _ in range(2)]
        assert answers[-1].status_code == 200 and len(answers[-1].json()) == 10
        later = metrics_json_bytes(rid, [("x", 10 + i, float(i), 1) for i in range(10)])
        assert httpx.post(server.url + "/v1/metrics", content=later, headers=headers).is_success
        got = httpx.get(url, params={"key": "x"}, headers=server.headers).json()
        assert [r["step"] for r in got] == list(range(20))
    finally:
        server.stop()
