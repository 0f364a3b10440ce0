"""Fixtures for the backend tests: `server` runs each test over SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend_fixture import Backend, backend, postgres_url

__all__ = ["backend", "postgres_url"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backend subprocess on SQLite, then on PostgreSQL (skipped without a database)."""
    db = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = Backend(tmp_path / f"backend-{request.param}", db=db)
    try:
        yield running
    finally:
        running.stop()
