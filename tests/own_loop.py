"""Event loops of their own thread, for tests that drive an ASGI app or asyncio clients.

Once the page tests' Playwright (sync API) has run in a pytest process, its event loop counts
as running on the main thread, where `asyncio.run` and `loop.run_until_complete` then fail
("Cannot run the event loop while another loop is running"). Which tests share a process
depends on how pytest-xdist deals them out, so every such test runs its loop elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def run_alone(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run on a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class LoopThread:
    """One event loop kept across calls (clients and apps bound to it stay usable), run on a
    thread of its own."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="test-loop")
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self._thread.submit(self.loop.run_until_complete, coroutine).result()

    def close(self) -> None:
        self._thread.submit(self.loop.close).result()
        self._thread.shutdown()
