"""pytest plugin: at the session's end, nothing the tests started may still run or listen, and
nothing they made under the temp dir may be left; any such leftover fails the session.

The tests' temp dir is a fresh one (TMPDIR and `tempfile.tempdir` point at it for the session,
so subprocesses use it too); pytest's own tmp_path dirs stay where pytest keeps them.

Under pytest-xdist (`-n 2`) each worker is a session of its own: it checks its own children,
its own listening sockets and its own temp dir (another worker's are not its leftovers), and
sends what it found to the controller, which reports them all and fails the run. The
controller runs no test and checks nothing itself (its children are the workers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psutil
import pytest

_before: dict[str, object] = {}
_from_workers: list[str] = []  # (xdist's controller) what the workers left
# What a library keeps in the temp dir on purpose: torch.compile's cache for the next process,
# and torchrun's elastic agent's run dir (its workers' logs and error files, which the agent
# leaves for a person to read after a job; the torchrun tests start real jobs).
_CACHES = ("torchinductor_", "torchelastic_")
# Helpers Python starts once per interpreter and ends when it ends (a spawn start's tracker).
_ENDS_WITH_US = ("multiprocessing.resource_tracker",)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        return
    # pytest keeps its tmp_path dirs where it always does: fix its base before TMPDIR moves
    session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    private = tempfile.mkdtemp(prefix="markov-tests-")
    _before.update(TMPDIR=os.environ.get("TMPDIR"), tempdir=tempfile.tempdir, private=private)
    os.environ["TMPDIR"] = tempfile.tempdir = private


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _is_controller(session.config):
        _report(session, _from_workers)
        return
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
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and fails the run
        workeroutput["leftovers"] = found
        return
    _report(session, found)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown without pytest-xdist
def pytest_testnodedown(node: Any, error: object) -> None:
    """(xdist's controller) A worker ended: keep what it left, named by the worker."""
    output = getattr(node, "workeroutput", {})  # none if the worker crashed
    _from_workers.extend(f"[{node.gateway.id}] {line}" for line in output.get("leftovers", []))


def _is_controller(config: pytest.Config) -> bool:
    """Whether this process is xdist's controller (it runs the workers, and no test)."""
    return config.pluginmanager.has_plugin("dsession")


def _report(session: pytest.Session, found: list[str]) -> None:
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
