"""Files in the run dir: bytes stored once by SHA-256 under blobs/, named in artifacts.jsonl.

`artifacts.jsonl` is an append-only event list: an "added" line when add_artifact is called
(the source path, so a copy cut by exit or kill -9 can be finished later), a "stored" line once
the bytes are under `blobs/<sha256>` (digest, size, media type), or a "changed" line when the
source kept changing while it was copied (nothing is stored torn). A copy hashes while it
writes a temporary file and compares the source's size, mtime, ctime and inode before and
after; only an unchanged source is renamed into place. A directory is stored as one
deterministic tar (sorted names, zero mtimes, no owners), so the same tree has one digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

ARTIFACTS_FILE = "artifacts.jsonl"
BLOB_DIR = "blobs"
CHUNK = 1 << 20
"""Bytes read and hashed at a time: memory stays bounded whatever the file's size."""
TAR_TYPE = "application/x-tar"
COPY_ATTEMPTS = 3
"""Copies of a source that changes while it is copied before it is given up on (and said)."""

_append_lock = threading.Lock()


class SourceChanged(Exception):
    """The source file changed while it was copied: the copy was thrown away."""


class Cancelled(Exception):
    """The copy was called off (stop() reached its deadline): its temporary file is removed."""


@dataclass(frozen=True)
class Stored:
    """Bytes under blobs/: their SHA-256 (hex), size and media type."""

    digest: str
    size: int
    media_type: str


def blob_path(run_dir: Path, digest: str) -> Path:
    return run_dir / BLOB_DIR / digest


def append_event(run_dir: Path, event: dict[str, Any]) -> None:
    """One whole line appended to artifacts.jsonl (one write, so never a torn line mid-file)."""
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode("utf-8")
    with _append_lock:
        fd = os.open(run_dir / ARTIFACTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The complete lines of artifacts.jsonl (a torn last line, left by a crash, is skipped)."""
    try:
        data = (run_dir / ARTIFACTS_FILE).read_bytes()
    except FileNotFoundError:
        return
    for raw in data.splitlines(keepends=True):
        if raw.endswith(b"\n"):
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def artifacts(run_dir: Path) -> list[dict[str, Any]]:
    """Each artifact by its number: its "added" fields, updated by what happened to it since
    (`state`: pending, stored or changed). A later artifact of the same name comes after."""
    found: dict[int, dict[str, Any]] = {}
    for event in read_events(run_dir):
        number = event.get("number")
        if not isinstance(number, int):
            continue
        if event.get("event") == "added":
            found[number] = {**event, "state": "pending"}
        elif number in found:
            found[number].update(event, state=event.get("event"))
    for entry in found.values():
        entry.pop("event", None)
    return list(found.values())


def store(source: Path, run_dir: Path, cancel: threading.Event | None = None) -> Stored:
    """Copy `source` (file or directory) into blobs/ by its SHA-256; SourceChanged if it kept
    changing over COPY_ATTEMPTS copies, Cancelled (within a chunk) once `cancel` is set."""
    for attempt in range(COPY_ATTEMPTS):
        try:
            return _store_once(source, run_dir, cancel or threading.Event())
        except SourceChanged:
            if attempt + 1 == COPY_ATTEMPTS:
                raise
            time.sleep(0.05 * (attempt + 1))  # a writer finishing its file gets a moment
    raise AssertionError("unreachable")


def _store_once(source: Path, run_dir: Path, cancel: threading.Event) -> Stored:
    blobs = run_dir / BLOB_DIR
    blobs.mkdir(exist_ok=True)
    tmp = blobs / f".{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as out:
            hashing = _HashingWriter(out, cancel)
            if source.is_dir():
                _write_tar(source, hashing)
                media_type = TAR_TYPE
            else:
                _copy_file(source, hashing)
                media_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
            if cancel.is_set():  # not even the fsync: stop() is not waiting any more
                raise Cancelled
            out.flush()
            os.fsync(out.fileno())
        digest = hashing.sha.hexdigest()
        target = blobs / digest
        if target.exists():  # the same bytes again (another name, another step): kept once
            tmp.unlink()
        else:
            os.replace(tmp, target)
        return Stored(digest, hashing.size, media_type)
    finally:
        tmp.unlink(missing_ok=True)


def store_bytes(data: bytes, run_dir: Path, media_type: str) -> Stored:
    """Bytes made in memory (an encoded image) into blobs/ by their SHA-256."""
    blobs = run_dir / BLOB_DIR
    blobs.mkdir(exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    target = blobs / digest
    if not target.exists():
        tmp = blobs / f".{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return Stored(digest, len(data), media_type)


class _HashingWriter(io.RawIOBase):
    """Writes through to a file, hashing and counting on the way; Cancelled once `cancel` is
    set (checked per write, so a copy is called off within a chunk)."""

    def __init__(self, out: BinaryIO, cancel: threading.Event) -> None:
        self.out, self.cancel, self.sha, self.size = out, cancel, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.cancel.is_set():
            raise Cancelled
        view = memoryview(data)
        self.sha.update(view)
        self.out.write(view)
        self.size += len(view)
        return len(view)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _copy_file(source: Path, out: _HashingWriter) -> None:
    with source.open("rb") as src:
        before = _identity(os.fstat(src.fileno()))
        left = before[0]  # only the size seen: a file growing all along still ends
        while left and (chunk := src.read(min(CHUNK, left))):
            out.write(chunk)
            left -= len(chunk)
        if left:
            raise SourceChanged(source)
    if _identity(os.stat(source)) != before:  # also a file replaced by rename meanwhile
        raise SourceChanged(source)


def _write_tar(root: Path, out: _HashingWriter) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    before = {p: _identity(p.stat()) for p in files}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size, info.mode, info.mtime = before[path][0], 0o644, 0
            with path.open("rb") as src:
                try:
                    tar.addfile(info, src)
                except OSError as exc:  # "unexpected end of data": it shrank meanwhile
                    raise SourceChanged(path) from exc
    if any(_identity(p.stat()) != before[p] for p in files):
        raise SourceChanged(root)


def storable_problem(path: Path) -> str | None:
    """Why `path` cannot be an artifact (missing, a socket, a device …), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None if os.access(path, os.R_OK) else "is not readable"
    kind = "a socket" if stat.S_ISSOCK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device"
    return f"is {kind}, not a file or directory"
