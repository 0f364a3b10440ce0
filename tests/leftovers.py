"""pytest plugin: at the session's end, nothing the tests started may still run or listen, and
nothing they made under the temp dir may be left; any such leftover fails the session.

The tests' temp dir is a fresh one (TMPDIR and `tempfile.tempdir` point at it for the session,
so subprocesses use it too); pytest's own tmp_path dirs stay where pytest keeps them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

_before: dict[str, object] = {}
# What a library keeps in the temp dir on purpose: torch.compile's cache for the next process,
# and torchrun's elastic agent's run dir (its workers' logs and error files, which the agent
# leaves for a person to read after a job; the torchrun tests start real jobs).
_CACHES = ("torchinductor_", "torchelastic_")
# Helpers Python starts once per interpreter and ends when it ends (a spawn start's tracker).
_ENDS_WITH_US = ("multiprocessing.resource_tracker",)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest keeps its tmp_path dirs where it always does: fix its base before TMPDIR moves
    session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    private = tempfile.mkdtemp(prefix="markov-tests-")
    _before.update(TMPDIR=os.environ.get("TMPDIR"), tempdir=tempfile.tempdir, private=private)
    os.environ["TMPDIR"] = tempfile.tempdir = private


def pytest_sessionfinish(session: pytest.Session) -> None:
    private = str(_before.pop("private", ""))
    if not private:
        return
    previous = _before.pop("TMPDIR")
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = str(previous)
    tempfile.tempdir = _before.pop("tempdir")  # type: ignore[assignment]
    found = leftovers(Path(private))
    shutil.rmtree(private, ignore_errors=True)
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.section("leftovers", sep="=", red=True)
            for line in found:
                reporter.line(line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def leftovers(private: Path) -> list[str]:
    """What the session left: live child processes, sockets this process listens on, files
    under the tests' temp dir."""
    me = psutil.Process()
    found = [
        f"process {child.pid} still runs: {' '.join(_cmdline(child))[:200]}"
        for child in me.children(recursive=True)
        if _running(child) and not any(p in " ".join(_cmdline(child)) for p in _ENDS_WITH_US)
    ]
    found += [
        f"port {conn.laddr.port} still listens (pid {me.pid})"
        for conn in getattr(me, "net_connections", me.connections)(kind="inet")  # psutil < 6
        if conn.status == psutil.CONN_LISTEN
    ]
    found += [
        f"left in the temp dir: {entry}"
        for entry in sorted(private.iterdir())
        if not entry.name.startswith(_CACHES)
    ]
    return found


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["?"]
