"""Where the backend keeps files: bytes by SHA-256, written in parts, committed by digest.

`BlobStore` is the interface the routes use (put a part, list the parts, commit by digest,
open for reading); `FileBlobStore` is its first backend, a directory:

    DIR/blobs/<2 hex>/<64 hex>         committed bytes, stored once whatever the runs naming them
    DIR/parts/<64 hex>/<index>         parts of an upload not committed yet (each idempotent)
    DIR/recordings/<recording>.json    the artifacts each recording names (artifact index)
    DIR/models/<model id>.json         the recording whose kind="model" artifact fills a model_id

The scale path is object storage (S3-compatible, through boto3): parts become a multipart
upload keyed by digest, commit verifies the digest and completes it, reads are ranged GETs; the
indexes move to database tables. Everything here streams: memory stays bounded by one chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CHUNK = 1 << 20


class BlobRefused(Exception):
    """A commit whose parts do not make the bytes it names (wrong size or digest): a 400."""


class BlobStore(Protocol):
    """Content-addressed bytes and the indexes naming them (see the module docstring)."""

    def size(self, hexdigest: str) -> int | None: ...
    def parts(self, hexdigest: str) -> dict[int, int]: ...
    def put_part(self, hexdigest: str, index: int, chunks: Iterable[bytes]) -> int: ...
    def commit(self, hexdigest: str, size: int, parts: int) -> None: ...
    def open(self, hexdigest: str) -> BinaryIO: ...
    def path(self, hexdigest: str) -> Path | None: ...
    def artifacts(self, recording_id: str) -> list[dict[str, Any]]: ...
    def name_artifact(self, recording_id: str, entry: dict[str, Any]) -> None: ...
    def model(self, model_id: str) -> dict[str, Any] | None: ...
    def set_model(self, model_id: str, doc: dict[str, Any]) -> None: ...


class FileBlobStore:
    """BlobStore on a local directory (the reference backend's default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("blobs", "parts", "recordings", "models"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # index read-modify-write within this process

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
        return {int(p.name): p.stat().st_size for p in folder.iterdir() if p.name.isdigit()}

    def put_part(self, hexdigest: str, index: int, chunks: Iterable[bytes]) -> int:
        """Write one part (replacing any earlier copy of it whole); its size."""
        folder = self.root / "parts" / hexdigest
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        size = 0
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
            os.replace(tmp, folder / str(index))
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def commit(self, hexdigest: str, size: int, parts: int) -> None:
        """Join parts 0..parts-1, check size and SHA-256, store under blobs/; a no-op for bytes
        already stored (the same file from another run)."""
        if self.path(hexdigest) is not None:
            shutil.rmtree(self.root / "parts" / hexdigest, ignore_errors=True)
            return
        folder = self.root / "parts" / hexdigest
        missing = [i for i in range(parts) if not (folder / str(i)).is_file()]
        if missing:
            raise BlobRefused(f"parts {missing[:10]} of sha256:{hexdigest} were not uploaded")
        target = self.root / "blobs" / hexdigest[:2] / hexdigest
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
        sha, written = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                for index in range(parts):
                    with (folder / str(index)).open("rb") as part:
                        while chunk := part.read(CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
            if written != size or sha.hexdigest() != hexdigest:
                shutil.rmtree(folder, ignore_errors=True)  # start that upload over, clean
                raise BlobRefused(
                    f"the parts make {written} bytes with SHA-256 {sha.hexdigest()}, not the "
                    f"{size} bytes of sha256:{hexdigest}; upload them again"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    def open(self, hexdigest: str) -> BinaryIO:
        found = self.path(hexdigest)
        if found is None:
            raise FileNotFoundError(hexdigest)
        return found.open("rb")

    def artifacts(self, recording_id: str) -> list[dict[str, Any]]:
        return list(_read(self.root / "recordings" / f"{recording_id}.json").get("artifacts", []))

    def name_artifact(self, recording_id: str, entry: dict[str, Any]) -> None:
        """Add (or replace, by name) one artifact of a recording."""
        path = self.root / "recordings" / f"{recording_id}.json"
        with self._lock:
            kept = [a for a in self.artifacts(recording_id) if a["name"] != entry["name"]]
            _write(path, {"artifacts": [*kept, entry]})

    def model(self, model_id: str) -> dict[str, Any] | None:
        return _read(self.root / "models" / f"{model_id}.json") or None

    def set_model(self, model_id: str, doc: dict[str, Any]) -> None:
        with self._lock:
            _write(self.root / "models" / f"{model_id}.json", doc)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def default_dir(db: str) -> Path:
    """`--artifacts` unless given: beside a SQLite file, else markov-artifacts in the cwd."""
    if db.startswith("sqlite:///") and db != "sqlite:///:memory:":
        return Path(db.removeprefix("sqlite:///") + ".artifacts")
    return Path("markov-artifacts")
