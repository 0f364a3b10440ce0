"""Where the backend keeps files: bytes by SHA-256, written in parts, committed by digest.

`BlobStore` is the interface the routes use (put a part, list the parts, commit by digest,
open for reading); `FileBlobStore` is its first backend, a directory:

    DIR/blobs/<2 hex>/<64 hex>         committed bytes, stored once whatever the runs naming them
    DIR/parts/<64 hex>/partial         an upload not committed yet, each part at its offset
    DIR/parts/<64 hex>/<index>         a part written whole (its size), so resuming skips it

Which artifacts a recording names, and the models, are in the database (artifactindex.py), so
several server processes share them. The other backend is object storage (s3store.py,
`--artifacts s3://bucket/prefix`). Everything here streams: memory stays bounded by one chunk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from markov_otel.rules import ARTIFACT_PART_BYTES

CHUNK = 1 << 20


class BlobRefused(Exception):
    """A commit whose parts do not make the bytes it names (wrong size or digest): a 400."""


class BlobStore(Protocol):
    """Content-addressed bytes, uploaded in parts (see the module docstring)."""

    part_bytes: int  # every part but the last of an upload is this long

    def size(self, hexdigest: str) -> int | None: ...
    def parts(self, hexdigest: str) -> dict[int, int]: ...
    def put_part(self, hexdigest: str, index: int, chunks: Iterable[bytes]) -> int: ...
    def commit(self, hexdigest: str, size: int, parts: int) -> None: ...
    def open(self, hexdigest: str) -> BinaryIO: ...
    def path(self, hexdigest: str) -> Path | None: ...  # a local file, when there is one
    def chunks(self, hexdigest: str, start: int, stop: int) -> Iterator[bytes]: ...


class FileBlobStore:
    """BlobStore on a local directory (the reference backend's default)."""

    def __init__(self, root: Path, part_bytes: int = ARTIFACT_PART_BYTES) -> None:
        self.root, self.part_bytes = root, part_bytes  # folders are made at the first write

    def path(self, hexdigest: str) -> Path | None:
        found = self.root / "blobs" / hexdigest[:2] / hexdigest
        return found if found.exists() else None

    def size(self, hexdigest: str) -> int | None:
        found = self.path(hexdigest)
        return None if found is None else found.stat().st_size

    def parts(self, hexdigest: str) -> dict[int, int]:
        folder = self.root / "parts" / hexdigest
        if not folder.is_dir():
            return {}
        return {int(p.name): int(p.read_text() or 0) for p in folder.iterdir() if p.name.isdigit()}

    def put_part(self, hexdigest: str, index: int, chunks: Iterable[bytes]) -> int:
        """Write part `index` at its offset in the upload's one partial file, then its marker
        (a part without a marker, cut mid-way, is sent again). Writing it twice is harmless."""
        folder = self.root / "parts" / hexdigest
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "partial"
        (folder / str(index)).unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o644)
        size = 0
        try:
            for chunk in chunks:
                size += os.pwrite(fd, chunk, index * self.part_bytes + size)
        finally:
            os.close(fd)
        _write_text(folder / str(index), str(size))
        return size

    def commit(self, hexdigest: str, size: int, parts: int) -> None:
        """Check that parts 0..parts-1 make `size` bytes of this SHA-256 (one read of the
        partial file), then move it under blobs/; a no-op for bytes already stored (the same
        file from another run)."""
        folder = self.root / "parts" / hexdigest
        if self.path(hexdigest) is not None:
            shutil.rmtree(folder, ignore_errors=True)
            return
        held = self.parts(hexdigest)
        missing = [i for i in range(parts) if i not in held]
        if missing:
            raise BlobRefused(f"parts {missing[:10]} of sha256:{hexdigest} were not uploaded")
        partial = folder / "partial"
        sha, written = hashlib.sha256(), 0
        with partial.open("r+b") as data:
            data.truncate(size)  # a part sent longer than it should be cannot add bytes
            while chunk := data.read(CHUNK):
                sha.update(chunk)
                written += len(chunk)
        if written != size or sha.hexdigest() != hexdigest:
            shutil.rmtree(folder, ignore_errors=True)  # start that upload over, clean
            raise BlobRefused(
                f"the parts make {written} bytes with SHA-256 {sha.hexdigest()}, not the "
                f"{size} bytes of sha256:{hexdigest}; upload them again"
            )
        target = self.root / "blobs" / hexdigest[:2] / hexdigest
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
        shutil.rmtree(folder, ignore_errors=True)

    def open(self, hexdigest: str) -> BinaryIO:
        found = self.path(hexdigest)
        if found is None:
            raise FileNotFoundError(hexdigest)
        return found.open("rb")

    def chunks(self, hexdigest: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes start..stop-1 of a stored blob, a chunk at a time."""
        with self.open(hexdigest) as data:
            data.seek(start)
            while start < stop and (chunk := data.read(min(CHUNK, stop - start))):
                start += len(chunk)
                yield chunk


def _write_text(path: Path, text: str) -> None:
    """Replace `path` whole: a reader sees the old text or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_dir(db: str) -> Path:
    """`--artifacts` unless given: beside a SQLite file, else markov-artifacts in the cwd."""
    path = db.removeprefix("sqlite:///")
    if "://" not in path and ":memory:" not in path:
        return Path(path + ".artifacts")
    return Path("markov-artifacts")
