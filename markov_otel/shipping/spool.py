"""The run dir: append-only OTLP-JSON line files, recording.json, and the sender's ack offsets.

Layout and line numbering are pinned in docs/protocol.md. Appends are whole lines in one
`write`; a write that fails half-way (disk full) is cut back so no torn line is ever followed by
another. A torn last line left by a crash is ignored on read and cut off before the next append.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import check_id, valid_id

SIGNALS = ("metrics", "traces", "logs")
RECORDING_FILE = "recording.json"
ACKS_FILE = "acks.json"
WRITER_FILE = "writer-id"


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
    text = json.dumps(strict_json(data), indent=1, sort_keys=True, default=str, allow_nan=False)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not also leave litter behind
        raise


def strict_json(value: Any) -> Any:
    """Valid JSON: non-finite floats become the OTLP strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and value - value != 0.0:
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
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
        self._closed = False  # after close(), a late append opens, writes and closes its file
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, base: Path, run_id: str) -> Spool:
        return cls(Path(base) / check_run_id(run_id))

    def create(self) -> None:
        """Make the run dir (a new one gets a writer id) and prove it writable now, not after
        an hour of training."""
        probe = self.dir / ".write-probe"
        try:
            new = not self.dir.exists()
            self.dir.mkdir(parents=True, exist_ok=True)
            if new:
                _fsync_dir(self.dir.parent)  # the run dir's own entry survives a power cut
            if not any(self.path(s).exists() for s in SIGNALS):
                self._new_writer_id()
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"run dir {self.dir} is not writable ({exc.strerror or exc}); "
                "set MARKOV_DIR (or `mkv config set dir PATH`) to a writable directory"
            ) from exc

    def path(self, signal: str) -> Path:
        return self.dir / f"{signal}.jsonl"

    def recording_id(self) -> str:
        """The recording this run dir writes into: its name, except for the run dir of a rank
        N > 0 of a distributed job (`<recording_id>.rank<N>`), whose recording.json says."""
        named = self.read_recording().get("recording_id")
        return named if valid_id(named) else self.dir.name

    def writer_id(self) -> str | None:
        """This run dir's writer id, part of every Idempotency-Key it sends, so that two run
        dirs adding to one recording (a second machine) never send the same key. None for a
        run dir written before writer ids existed: its keys keep their first form."""
        try:
            value = (self.dir / WRITER_FILE).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value if valid_id(value) else None

    def _new_writer_id(self) -> None:
        try:
            fd = os.open(self.dir / WRITER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(uuid.uuid4().hex[:16] + "\n")

    def append(self, signal: str, data: bytes) -> None:
        """Append whole lines; on failure cut the file back to where it was and raise OSError."""
        with self._lock:
            fd = self._fd(signal)
            try:
                _append(fd, data)
            finally:
                if self._closed:
                    os.close(self._files.pop(signal))

    def _fd(self, signal: str) -> int:
        fd = self._files.get(signal)
        if fd is None:
            path = self.path(signal)
            new = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            if new:
                _fsync_dir(self.dir)
            _cut_torn_tail(fd)
            self._files[signal] = fd
        return fd

    def sync(self) -> None:
        """fsync the line files (at stop: a finished run survives a power cut too)."""
        with self._lock:
            for fd in self._files.values():
                os.fsync(fd)

    def close(self) -> None:
        """Close the line files. Holding the lock, no append is half-way through one; a later
        append (a straggling exporter) opens its file again rather than reuse a closed fd."""
        with self._lock:
            self._closed = True
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def points_on_disk(self) -> tuple[int, int | None]:
        """(points in metrics.jsonl, the step of the last record written): where a resumed
        recording continues. A torn tail is not counted."""
        points, last = 0, None
        for line in self.lines("metrics"):
            count = line.data.count(b'"timeUnixNano"')
            if count:
                points, last = points + count, line
        return points, None if last is None else _last_step(last.data)

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

    def read_line(self, signal: str, offset: int, end: int) -> bytes:
        """The line between two byte offsets of a signal file, without its newline."""
        with open(self.path(signal), "rb") as fh:
            fh.seek(offset)
            return fh.read(end - offset).rstrip(b"\n")

    def read_recording(self) -> dict[str, Any]:
        return read_json(self.dir / RECORDING_FILE)

    def write_recording(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.dir / RECORDING_FILE, info)

    def read_acks(self, name: str = ACKS_FILE) -> dict[str, Any]:
        return read_json(self.dir / name)

    def write_acks(self, acks: dict[str, Any], name: str = ACKS_FILE) -> None:
        write_json_atomic(self.dir / name, acks)


def _last_step(line: bytes) -> int | None:
    """The markov.step of the latest point of a metrics line (its records' last step)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    latest: tuple[int, int] | None = None
    for rm in data.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                data_points = metric.get("gauge") or metric.get("exponentialHistogram") or {}
                for dp in data_points.get("dataPoints", []):  # a number, or an array's point
                    steps = [a for a in dp.get("attributes", []) if a["key"] == "markov.step"]
                    if steps:
                        point = (int(dp["timeUnixNano"]), int(steps[0]["value"]["intValue"]))
                        latest = point if latest is None or point >= latest else latest
    return None if latest is None else latest[1]


def _append(fd: int, data: bytes) -> None:
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.ftruncate(fd, start)
        raise


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a file's fsync does not cover its name)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is unaffected
    finally:
        os.close(fd)


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
