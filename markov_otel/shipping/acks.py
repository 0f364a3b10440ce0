"""What each backend has acknowledged of a run dir, and the lines it refused (set aside).

`acks.json` in the run dir holds, per backend (its URL without credentials), how far each signal
file has been acknowledged (`lines` and the byte `offset` after them) and the lines that backend
refused for their content, each with the HTTP status and the reason. A refused line is set aside
so the rest of the run flows on; `mkv show` lists it and `mkv sync --resend-set-aside` tries it
again. Syncing to a second backend starts from its own marks, never from another's.

The first format (one set of marks, no backend) is read as the marks of the endpoint that
recording.json names.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from markov_otel.config import redact_url
from markov_otel.shipping.spool import ACKS_FILE, SIGNALS, Spool, SpoolLine


def backend_key(url: str) -> str:
    """The name a backend's acknowledgements are kept under: its URL, no credentials."""
    return redact_url(url).rstrip("/")


@dataclass(frozen=True)
class SetAside:
    """A spool line a backend refused for its content, kept on disk with the reason."""

    signal: str
    line: int
    offset: int  # where the line starts in its file
    end: int  # the byte after its newline
    status: int
    reason: str
    at: float  # when it was refused (Unix time)


class Acks:
    """One backend's acknowledgements of one run dir; `save()` writes them back atomically."""

    def __init__(self, spool: Spool, backend: str, file: str = ACKS_FILE) -> None:
        self._spool, self._file = spool, file
        self.backend = backend_key(backend)
        self._all = _load(spool, file)
        mine = self._all.setdefault(self.backend, {})
        self._marks: dict[str, dict[str, int]] = mine.setdefault("marks", {})
        self._aside: list[dict[str, Any]] = mine.setdefault("set_aside", [])

    def mark(self, signal: str) -> tuple[int, int]:
        """(lines, byte offset) acknowledged or set aside from the start of a signal file."""
        mark = self._marks.get(signal) or {}
        return int(mark.get("lines", 0)), int(mark.get("offset", 0))

    def advance(self, signal: str, line: SpoolLine) -> None:
        """`line` is done with (stored, or set aside): the next send starts after it."""
        self._marks[signal] = {"lines": line.number + 1, "offset": line.end}

    def set_aside(self, signal: str, line: SpoolLine, status: int, reason: str) -> SetAside:
        """Keep `line` aside with why it was refused, and move past it."""
        entry = SetAside(
            signal, line.number, line.end - len(line.data) - 1, line.end, status, reason[:500],
            time.time(),
        )  # fmt: skip
        self._forget(signal, line.number)
        self._aside.append(asdict(entry))
        self.advance(signal, line)
        return entry

    def set_aside_lines(self) -> list[SetAside]:
        return [SetAside(**entry) for entry in self._aside]

    def taken_back(self, entry: SetAside) -> None:
        """A set-aside line was stored after all."""
        self._forget(entry.signal, entry.line)

    def _forget(self, signal: str, number: int) -> None:
        self._aside[:] = [e for e in self._aside if (e["signal"], e["line"]) != (signal, number)]

    def unsent(self) -> int:
        """Complete lines of every signal after this backend's marks."""
        total = 0
        for signal in SIGNALS:
            lines, offset = self.mark(signal)
            total += sum(1 for _ in self._spool.lines(signal, lines, offset))
        return total

    def save(self) -> None:
        self._spool.write_acks({"version": 2, "backends": self._all}, self._file)


def complete_backends(spool: Spool, file: str = ACKS_FILE) -> list[str]:
    """The backends that hold every line of the run (acknowledged or set aside), sorted."""
    done = []
    for backend in sorted(_load(spool, file)):
        acks = Acks(spool, backend, file)
        if any(acks.mark(signal) != (0, 0) for signal in SIGNALS) and acks.unsent() == 0:
            done.append(backend)
    return done


def _load(spool: Spool, file: str) -> dict[str, Any]:
    data = spool.read_acks(file)
    backends = data.get("backends")
    if isinstance(backends, dict):
        return backends
    legacy = {s: m for s, m in data.items() if s in SIGNALS and isinstance(m, dict)}
    if not legacy:
        return {}
    endpoint = spool.read_recording().get("endpoint")
    return {backend_key(str(endpoint or "")): {"marks": legacy, "set_aside": []}}
