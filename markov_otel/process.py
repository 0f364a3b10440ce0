"""Process events that must not lose a run: exit without stop(), SIGTERM, and fork.

- exit: every running recorder is stopped (flushed to disk, bounded by its sync_data_timeout).
- SIGTERM: when nobody else handles it, it becomes `SystemExit(143)` in the main thread, so
  `with recorder:` blocks and the exit hook run, and the run is marked `terminated`; once every
  recorder has stopped, it kills as it would have without us.
- fork (DataLoader workers): the child's copy of a recorder is disowned — its buffer belongs to
  the parent, which writes it — and add_record in the child raises, naming the fix.

Hooks are installed when the first recorder starts, never at import.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("markov_otel")


class Tracked(Protocol):
    @property
    def recording_id(self) -> str: ...

    def stop(self, *, status: str = "finished") -> None: ...
    def _disown_after_fork(self, parent_pid: int) -> None: ...
    def _note_signal(self, status: str) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
_deferring = 0  # stop()s in signals_deferred (main thread only)


def track(recorder: Tracked) -> None:
    """A recorder started: stop it at exit, on SIGTERM, and disown it in forked children."""
    _install()
    _live.add(recorder)


def untrack(recorder: Tracked) -> None:
    _live.discard(recorder)


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        atexit.register(_stop_live)
        os.register_at_fork(after_in_child=lambda: _disown_all(os.getppid()))
    _take_sigterm()


def _take_sigterm() -> None:
    """Only from the main thread, and only when SIGTERM still has its default action."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills as usual
    if not _live and not _deferring:
        # Every recorder has stopped: SIGTERM kills as if we had never been here. A
        # multiprocessing Pool's terminate() counts on that; SystemExit in its worker can hang
        # the worker's exit (and the pool's join) on the queue's feeder thread.
        signal.raise_signal(signum)
        return
    for recorder in list(_live):
        recorder._note_signal("terminated")
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_deferred(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the body is done, then deliver them as they would have been.

    `on_signal(signum)` runs when one arrives (in the main thread, between bytecodes). Python
    handlers can only be set from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)
        on_signal(signum)

    global _deferring
    previous = {held: signal.signal(held, hold) for held in (signal.SIGINT, signal.SIGTERM)}
    _deferring += 1  # a recorder is stopping: a SIGTERM is still the recorder's (143)
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        try:
            for signum in dict.fromkeys(arrived):
                signal.raise_signal(signum)  # the handler they would have met: raise or die
        finally:
            _deferring -= 1


def _stop_live() -> None:
    status = "failed" if _died_of_exception() else "finished"
    for recorder in list(_live):
        try:
            recorder.stop(status=status)
        except Exception as exc:  # exit must go on whatever happens
            log.error("markov_otel: stopping %s at exit failed: %s", recorder.recording_id, exc)


def _died_of_exception() -> bool:
    """The script ended with an uncaught exception: Python prints it and keeps it in
    sys.last_value before atexit runs. An interactive session keeps the last one it showed
    at a prompt, which says nothing about how the session ends."""
    return getattr(sys, "last_value", None) is not None and not hasattr(sys, "ps1")


def _disown_all(parent_pid: int) -> None:
    for recorder in list(_live):
        recorder._disown_after_fork(parent_pid)
    _live.clear()
