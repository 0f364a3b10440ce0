"""Fixtures for the backend tests: `chromium` is a headless browser for the page tests,
`browsing` a signed-out session of it on `backend` (browsing.py), `screenshots` where they
save pictures.

`server` (each test over SQLite and PostgreSQL), `backend` and `postgres_url` come from the
`backend_fixture` plugin (loaded by tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from backend_fixture import Backend
from browsing import Browsing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
_SCREENSHOTS: list[Path] = []


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the page tests save their screenshots (printed at the end of the run)."""
    where = tmp_path_factory.mktemp("page-screenshots")
    _SCREENSHOTS.append(where)
    return where


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (its own browser download cannot work here)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for where in _SCREENSHOTS:
        shots = sorted(p.name for p in where.glob("*.png"))
        terminalreporter.write_line(f"page screenshots ({len(shots)}) in {where}: {shots}")


@pytest.fixture
def browsing(chromium: Any, backend: Backend) -> Iterator[Browsing]:
    session = Browsing(chromium, backend)
    try:
        yield session
    finally:
        session.context.close()


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    """A database of this test's own on the test PostgreSQL server, as a --db URL: not only a
    schema, for tests that end every session of their database (test_postgres.py) or kill a
    server inside a transaction (test_team_deployment.py), which must not reach the servers of
    tests running beside them (pytest-xdist)."""
    name = "markov_own_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
