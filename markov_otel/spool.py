"""The run dir: append-only OTLP-JSON line files, recording.json, and the sender's ack offsets.

Layout and line numbering are pinned in docs/protocol.md. Appends are whole lines in one
`write`; a write that fails half-way (disk full) is cut back so no torn line is ever followed by
another. A torn last line left by a crash is ignored on read and cut off before the next append.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import check_id

SIGNALS = ("metrics", "traces", "logs")
RECORDING_FILE = "recording.json"
ACKS_FILE = "acks.json"


def check_run_id(run_id: str) -> str:
    """The id itself, if it is safe as a directory name; else a ConfigError."""
    return check_id(run_id)


@dataclass(frozen=True)
class SpoolLine:
    """One complete line of a signal file: its 0-based number and the byte offset after it."""

    number: int
    end: int
    data: bytes  # without the newline; sent as-is, so it is never decoded on the send path

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON so a reader sees the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    text = json.dumps(_strict(data), indent=1, sort_keys=True, default=str, allow_nan=False)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not also leave litter behind
        raise


def _strict(value: Any) -> Any:
    """Valid JSON: non-finite floats become the OTLP strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and value - value != 0.0:
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; missing or unreadable is empty (the run dir is best-effort metadata)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Spool:
    """One run dir. Appends are thread-safe; readers may run in other processes."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self._files: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, base: Path, run_id: str) -> Spool:
        return cls(Path(base) / check_run_id(run_id))

    def create(self) -> None:
        """Make the run dir and prove it writable now, not after an hour of training."""
        probe = self.dir / ".write-probe"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"run dir {self.dir} is not writable ({exc.strerror or exc}); "
                "set MARKOV_DIR (or `mkv config set dir PATH`) to a writable directory"
            ) from exc

    def path(self, signal: str) -> Path:
        return self.dir / f"{signal}.jsonl"

    def append(self, signal: str, data: bytes) -> None:
        """Append whole lines; on failure cut the file back to where it was and raise OSError."""
        with self._lock:
            fd = self._fd(signal)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                os.ftruncate(fd, start)
                raise

    def _fd(self, signal: str) -> int:
        fd = self._files.get(signal)
        if fd is None:
            fd = os.open(self.path(signal), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            _cut_torn_tail(fd)
            self._files[signal] = fd
        return fd

    def sync(self) -> None:
        """fsync the line files (at stop: a finished run survives a power cut too)."""
        with self._lock:
            for fd in self._files.values():
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def lines(self, signal: str, start_line: int = 0, start_offset: int = 0) -> Iterator[SpoolLine]:
        """Complete lines from a known (line, offset) position; a torn tail is left unread."""
        if not self.path(signal).exists():
            return
        with open(self.path(signal), "rb") as fh:
            fh.seek(start_offset)
            number, offset = start_line, start_offset
            for raw in fh:
                if not raw.endswith(b"\n"):
                    return
                offset += len(raw)
                yield SpoolLine(number, offset, raw[:-1])
                number += 1

    def read_recording(self) -> dict[str, Any]:
        return read_json(self.dir / RECORDING_FILE)

    def write_recording(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.dir / RECORDING_FILE, info)

    def read_acks(self, name: str = ACKS_FILE) -> dict[str, dict[str, int]]:
        return read_json(self.dir / name)

    def write_acks(self, acks: dict[str, dict[str, int]], name: str = ACKS_FILE) -> None:
        write_json_atomic(self.dir / name, acks)


def _cut_torn_tail(fd: int) -> None:
    """Drop a partial last line (a crash mid-write) so the next append starts a fresh line."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    block, end = 65536, size
    while end > 0:
        begin = max(0, end - block)
        chunk = os.pread(fd, end - begin, begin)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, begin + cut + 1)
            return
        end = begin
    os.ftruncate(fd, 0)
