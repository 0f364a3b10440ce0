"""Uploading a run dir's artifacts: in parts, resumable, each file's bytes sent once.

For each artifact stored in the run dir (blobs.py) and not yet acked by this backend: ask
which parts of its digest the backend holds (`GET /api/v1/blobs/{digest}`), PUT the missing
ones read one part at a time from the run dir (memory bounded by a part), commit by digest,
then name it under the recording. A cut upload (kill -9, a dead network) resumes at the first
missing part under the sender or `mkv sync`; bytes the backend already has (another run, the
same checkpoint twice) are not sent at all. Acks are per backend in artifact-acks.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from markov_otel.rules import ARTIFACT_PART_BYTES
from markov_otel.shipping import blobs
from markov_otel.shipping.acks import backend_key
from markov_otel.shipping.spool import Spool
from markov_otel.shipping.transport import LINE_REFUSALS, BackendClient, Refused
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

ACKS_FILE = "artifact-acks.json"
SLICE = 2.0
"""Seconds of uploading per sender round before the points' lines get their turn again."""


def unsent_count(spool: Spool, base: str) -> int:
    """Stored artifacts of a run dir that backend `base` has neither acked nor refused."""
    state = spool.read_acks(ACKS_FILE).get(backend_key(base))
    state = state if isinstance(state, dict) else {}
    settled = {*state.get("done", []), *map(int, state.get("refused", {}))}
    return sum(
        a["state"] == "stored" and a["number"] not in settled for a in blobs.artifacts(spool.dir)
    )


class Uploads:
    """The artifacts of one run dir, uploaded to one backend (called from the sender)."""

    def __init__(self, spool: Spool, client: BackendClient, base: str) -> None:
        self._spool, self._client, self._key = spool, client, backend_key(base)
        self._rid = spool.recording_id()
        self._trouble = SayOnce(log)
        self._part_bytes: int | None = None
        self.sent_bytes = 0  # part bytes this process PUT (what the backend did not have)

    def _state(self) -> dict[str, Any]:
        state = self._spool.read_acks(ACKS_FILE).get(self._key)
        return state if isinstance(state, dict) else {"done": [], "refused": {}}

    def _save(self, state: dict[str, Any]) -> None:
        acks = self._spool.read_acks(ACKS_FILE)
        acks[self._key] = state
        self._spool.write_acks(acks, ACKS_FILE)

    def unsent(self) -> list[dict[str, Any]]:
        """Stored artifacts this backend has neither acked nor refused (see unsent_count)."""
        state = self._state()
        settled = {*state.get("done", []), *map(int, state.get("refused", {}))}
        return [
            a
            for a in blobs.artifacts(self._spool.dir)
            if a["state"] == "stored" and a["number"] not in settled
        ]

    def pump(self, timeout: Callable[[], float], past_deadline: Callable[[], bool]) -> bool:
        """Upload what is unsent for about SLICE seconds (so the points' lines are not held up
        behind a 2 GB checkpoint); True when some is left for the next round. Retry (weather)
        and a pausing Refused propagate to the sender."""
        until = time.monotonic() + SLICE
        for artifact in self.unsent():
            if past_deadline() or time.monotonic() >= until:
                return True
            state = self._state()
            try:
                done = self._upload(artifact, timeout, until)
            except Refused as exc:
                if exc.status not in LINE_REFUSALS:
                    raise
                state.setdefault("refused", {})[str(artifact["number"])] = str(exc)[:500]
                self._trouble.say(
                    f"refused:{artifact['number']}", logging.ERROR,
                    "markov_otel: the backend refused artifact %r of recording %s (%s); it "
                    "stays in %s",
                    artifact["name"], self._rid, exc, self._spool.dir,
                )  # fmt: skip
            else:
                if not done:
                    return True  # its slice ran out between parts: the next round goes on
                state.setdefault("done", []).append(artifact["number"])
            self._save(state)
        return False

    def _upload(self, artifact: dict[str, Any], timeout: Callable[[], float], until: float) -> bool:
        """Send what the backend lacks of one artifact, then name it; False if the slice ran
        out first (the parts sent so far are held by the backend)."""
        digest, size = artifact["digest"], int(artifact["size"])
        held = self._client.call("GET", f"/api/v1/blobs/{digest}", timeout=timeout())
        if not held.get("stored") and not self._send_parts(
            digest, size, held.get("parts") or {}, timeout, until
        ):
            return False
        body = {k: artifact.get(k) for k in ("digest", "kind", "media_type", "metadata", "step")}
        path = f"/api/v1/recordings/{self._rid}/artifacts/{quote(artifact['name'], safe='')}"
        self._client.call("PUT", path, json=body, timeout=timeout())
        return True

    def _send_parts(
        self,
        digest: str,
        size: int,
        held: dict[str, int],
        timeout: Callable[[], float],
        until: float,
    ) -> bool:
        part = self._part_size(timeout)
        count = max(1, -(-size // part))
        local = blobs.blob_path(self._spool.dir, digest.removeprefix("sha256:"))
        with local.open("rb") as source:
            for index in range(count):
                length = min(part, size - index * part)
                if held.get(str(index)) == length:
                    continue  # the backend has it from an earlier, cut, upload
                if time.monotonic() >= until:
                    return False
                source.seek(index * part)
                data = source.read(length)
                self._client.call(
                    "PUT", f"/api/v1/blobs/{digest}/parts/{index}", data=data, timeout=timeout()
                )
                self.sent_bytes += len(data)
        commit = {"size": size, "parts": count}
        self._client.call("POST", f"/api/v1/blobs/{digest}", json=commit, timeout=timeout())
        return True

    def _part_size(self, timeout: Callable[[], float]) -> int:
        if self._part_bytes is None:
            limits = self._client.call("GET", "/api/v1/limits", timeout=timeout())
            self._part_bytes = int(limits.get("artifact_part_bytes") or ARTIFACT_PART_BYTES)
        return self._part_bytes
