"""add_artifact's two halves: the check on the caller's thread, the copy on a thread of its own.

The caller pays a stat and one short line appended to artifacts.jsonl (about a millisecond,
whatever the size); hashing and copying into the run dir (shipping/blobs.py) happen on the
"markov-artifacts" thread, so neither training nor the flusher waits for a 2 GB checkpoint.
What is still pending at stop() is waited for within its deadline; then the copy under way is
called off (within a chunk, its temporary file removed, nothing written after) and the rest is
resumable: the "added" line names the source, and `mkv sync` copies it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.recording.images import png
from markov_otel.rules import check_key, check_params, check_step
from markov_otel.shipping import blobs
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

KINDS = ("file", "model", "checkpoint", "dataset")


def check_artifact(
    path: Any, name: str | None, kind: str, metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The "added" event for a valid artifact; a ConfigError naming what is wrong otherwise."""
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise ConfigError(f"add_artifact path={path!r} must be a file or directory path")
    source = Path(path).expanduser().absolute()
    problem = blobs.storable_problem(source)
    if problem is not None:
        raise ConfigError(
            f"add_artifact path={str(path)!r} {problem}; pass a regular file or a directory"
        )
    if kind not in KINDS:
        raise ConfigError(f"add_artifact kind={kind!r} must be one of {', '.join(KINDS)}")
    name = check_key(source.name if name is None else name, "artifact name")
    return {
        "event": "added",
        "name": name,
        "kind": kind,
        "source": str(source),
        "metadata": check_params("artifact metadata", metadata),
    }


class ArtifactCopier:
    """Copies added artifacts into the run dir, in order, on its own thread."""

    def __init__(self, run_dir: Path, on_stored: Callable[[dict[str, Any]], None]) -> None:
        self._run_dir, self._on_stored = run_dir, on_stored
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._number = max((a["number"] for a in blobs.artifacts(run_dir)), default=-1) + 1
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._trouble = SayOnce(log)
        self._cancel = threading.Event()  # set when stop() stops waiting

    def add(self, event: dict[str, Any], step: int | None) -> None:
        """Note the artifact in artifacts.jsonl and queue its copy."""
        with self._lock:
            event = {**event, "number": self._number, "time_unix_nano": time.time_ns()}
            if step is not None:
                event["step"] = check_step(step)
            self._number += 1
            blobs.append_event(self._run_dir, event)
            self._start()
        self._jobs.put(event)

    def add_image(self, key: str, step: int, pixels: Any, caption: str | None) -> None:
        """Queue an image value (already checked and copied) to be PNG-encoded and stored."""
        with self._lock:
            number, self._number = self._number, self._number + 1
            self._start()
        metadata = {} if caption is None else {"caption": caption}
        event = {
            "event": "added", "number": number, "name": f"{key}/{step}.png", "kind": "image",
            "key": key, "step": step, "metadata": metadata, "time_unix_nano": time.time_ns(),
        }  # fmt: skip
        self._jobs.put({**event, "pixels": pixels})

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="markov-artifacts", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for pending copies; True when none is left."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        self._jobs.put(None)
        thread.join(max(0.0, timeout))
        if thread.is_alive():
            self._on_stored = _nothing  # the recording's log is closing: artifacts.jsonl says it
            self._cancel.set()  # no copy goes on behind stop()'s back; `mkv sync` redoes it
            log.warning(
                "markov_otel: artifacts of %s are still being copied at stop(); they stay "
                "pending in the run dir and `mkv sync %s` finishes them",
                self._run_dir, self._run_dir.name,
            )  # fmt: skip
            return False
        return True

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None and not self._cancel.is_set():
            if "pixels" in job:
                entry = store_image(self._run_dir, job, self._trouble)
            else:
                entry = copy_one(self._run_dir, job, self._trouble, self._cancel)
            if entry is not None:
                self._on_stored(entry)


def copy_one(
    run_dir: Path,
    added: Mapping[str, Any],
    trouble: SayOnce,
    cancel: threading.Event | None = None,
) -> dict[str, Any] | None:
    """Copy one pending artifact; its "stored" event, or None (said once) when it could not,
    or None (it stays pending; stop() said so) when `cancel` called the copy off."""
    number, source = added["number"], Path(added["source"])
    try:
        stored = blobs.store(source, run_dir, cancel)
    except blobs.Cancelled:
        return None
    except blobs.SourceChanged:
        blobs.append_event(run_dir, {"event": "changed", "number": number})
        trouble.say(
            f"changed:{source}", logging.WARNING,
            "markov_otel: %s kept changing while it was copied, so artifact %r was not kept "
            "(never half of it); add_artifact it again once it is fully written",
            source, added["name"],
        )  # fmt: skip
        return None
    except OSError as exc:  # gone, or the disk is full: weather, the event stays pending
        trouble.say(
            f"copy:{source}", logging.WARNING,
            "markov_otel: cannot copy artifact %r from %s (%s); it stays pending, and "
            "`mkv sync %s` copies it if the file is still there",
            added["name"], source, exc.strerror or exc, run_dir.name,
        )  # fmt: skip
        return None
    event = {
        "event": "stored",
        "number": number,
        "digest": f"sha256:{stored.digest}",
        "size": stored.size,
        "media_type": stored.media_type,
    }
    blobs.append_event(run_dir, event)
    return {**added, **event}


def store_image(run_dir: Path, job: dict[str, Any], trouble: SayOnce) -> dict[str, Any] | None:
    """Encode one image value as PNG and store it; its events are written only now (an image
    not encoded when the process dies is lost with it, like the last interval of records)."""
    added = {k: v for k, v in job.items() if k != "pixels"}
    try:
        stored = blobs.store_bytes(png(job["pixels"]), run_dir, "image/png")
        blobs.append_event(run_dir, added)
    except OSError as exc:
        trouble.say(
            "image", logging.WARNING, "markov_otel: cannot store image %r in %s (%s)",
            added["name"], run_dir, exc.strerror or exc,
        )  # fmt: skip
        return None
    event = {"event": "stored", "number": added["number"], "digest": f"sha256:{stored.digest}",
             "size": stored.size, "media_type": stored.media_type}  # fmt: skip
    blobs.append_event(run_dir, event)
    return {**added, **event}


def finish_pending(run_dir: Path) -> int:
    """Copy what a process left pending in `run_dir` (for `mkv sync`); how many were stored."""
    trouble = SayOnce(log)
    pending = [a for a in blobs.artifacts(run_dir) if a["state"] == "pending"]
    return sum(copy_one(run_dir, a, trouble) is not None for a in pending)


def _nothing(entry: dict[str, Any]) -> None:
    """What a copy finished after stop() stopped waiting announces: nothing more."""
