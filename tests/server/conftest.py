"""Fixtures for the backend tests: `chromium` is a headless browser for the page tests,
`browsing` a signed-out session of it on `backend` (browsing.py), `screenshots` where they
save pictures.

`server` (each test over SQLite and PostgreSQL), `backend` and `postgres_url` come from the
`backend_fixture` plugin (loaded by tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
