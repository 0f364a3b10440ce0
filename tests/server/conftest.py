"""Fixtures for the backend tests: `server` runs each test over SQLite and PostgreSQL.

`backend` and `postgres_url` come from the `backend_fixture` plugin (loaded by tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixture import Backend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backend subprocess on SQLite, then on PostgreSQL (skipped without a database)."""
    db = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = Backend(tmp_path / f"backend-{request.param}", db=db)
    try:
        yield running
    finally:
        running.stop()
