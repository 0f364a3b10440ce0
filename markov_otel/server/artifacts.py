"""The artifact routes of protocol.md: chunked uploads by digest, a recording's artifacts, models.

Bytes are uploaded once per digest, in parts (`PUT /api/v1/blobs/{digest}/parts/{index}`, each
idempotent), and committed by digest (the server joins and hashes them); a recording then names
them (`PUT …/recordings/{id}/artifacts/{name}`). Listing and downloading go through the
recording, so a project-scoped token reads only its project's files; the blob routes say only
whether bytes of a given SHA-256 are stored, which a client can ask only if it has them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from markov_otel import rules
from markov_otel.server.api import Api, json_response, route_by_method
from markov_otel.server.auth import Grant
from markov_otel.server.blobstore import BlobRefused, BlobStore
from markov_otel.server.bodies import ApiError, json_object
from markov_otel.server.fields import text

__all__ = ["artifact_routes"]

_DIGEST = re.compile(rules.DIGEST_PATTERN)
_ONE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")
KINDS = ("file", "model", "checkpoint", "dataset", "image")  # image: an add_record value


def hex_of(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ApiError(400, f"digest {digest[:80]!r} must be sha256:<64 lower-case hex digits>")
    return digest.removeprefix("sha256:")


class Artifacts:
    """The handlers over one BlobStore, next to the recordings' Api."""

    def __init__(self, api: Api, blobs: BlobStore, max_artifact_bytes: int) -> None:
        self.api, self.blobs, self.max_bytes = api, blobs, max_artifact_bytes

    async def blob(self, request: Request) -> Response:
        hexdigest = hex_of(request.path_params["digest"])
        size = await run_in_threadpool(self.blobs.size, hexdigest)
        parts = {} if size is not None else await run_in_threadpool(self.blobs.parts, hexdigest)
        doc = {"digest": f"sha256:{hexdigest}", "stored": size is not None, "size": size}
        return json_response(doc | {"parts": {str(i): n for i, n in sorted(parts.items())}})

    async def put_part(self, request: Request) -> Response:
        hexdigest = hex_of(request.path_params["digest"])
        index = _index(request.path_params["index"])
        part = self.blobs.part_bytes
        if index * part >= self.max_bytes:
            raise self.too_large(index * part)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > part:
            raise ApiError(413, f"a part is at most {part} bytes (artifact_part_bytes)")
        async with self.api.gate.slot():
            chunks = [c async for c in _bounded(request, part)]  # at most one part in memory
            size = await run_in_threadpool(self.blobs.put_part, hexdigest, index, chunks)
        return json_response({"index": index, "size": size})

    async def commit(self, request: Request) -> Response:
        hexdigest = hex_of(request.path_params["digest"])
        body = await json_object(request, 4096)
        size, parts = body.get("size"), body.get("parts")
        if type(size) is not int or type(parts) is not int or size < 0 or parts < 0:
            raise ApiError(400, 'commit needs {"size": bytes, "parts": count}, as integers')
        if size > self.max_bytes:
            raise self.too_large(size)
        async with self.api.gate.slot():
            try:
                await run_in_threadpool(self.blobs.commit, hexdigest, size, parts)
            except BlobRefused as exc:
                raise ApiError(400, str(exc)) from None
        return json_response({"digest": f"sha256:{hexdigest}", "size": size, "stored": True})

    def too_large(self, size: int) -> ApiError:
        return ApiError(
            413,
            f"an artifact of {size} bytes is over this backend's limit of {self.max_bytes} "
            "bytes (mkv serve --max-artifact-bytes); it stays in the run dir",
        )

    async def name(self, request: Request) -> Response:
        recording = await self.api.readable(request)
        name = rules.check_key(request.path_params["name"], "artifact name")
        body = await json_object(request, rules.MAX_PARAMS_BYTES + 8192)
        entry = _entry(name, body)
        size = await run_in_threadpool(self.blobs.size, hex_of(entry["digest"]))
        if size is None:
            raise ApiError(409, f"{entry['digest']} is not stored yet: upload and commit it first")
        entry["size"] = size
        model_id = recording.get("model_id") if entry["kind"] == "model" else None
        index = self.api.store.name_artifact
        await run_in_threadpool(index, recording["recording_id"], entry, model_id or None)
        return json_response(entry)

    async def list(self, request: Request) -> Response:
        recording = await self.api.readable(request)
        found = await run_in_threadpool(self.api.store.artifacts, recording["recording_id"])
        return json_response(found)

    async def download(self, request: Request) -> Response:
        recording = await self.api.readable(request)
        name = request.path_params["name"]
        found = await run_in_threadpool(self.api.store.artifacts, recording["recording_id"])
        entry = next((a for a in found if a["name"] == name), None)
        hexdigest = None if entry is None else hex_of(entry["digest"])
        size = None if hexdigest is None else await run_in_threadpool(self.blobs.size, hexdigest)
        if entry is None or hexdigest is None or size is None:
            raise ApiError(404, f"recording {recording['recording_id']!r} has no artifact {name!r}")
        path = self.blobs.path(hexdigest)
        if path is not None:  # FileResponse answers Range (206, 416) and streams from disk
            return FileResponse(path, media_type=entry["media_type"], filename=name.split("/")[-1])
        return ranged(request, self.blobs, hexdigest, size, entry["media_type"], name)

    async def model(self, request: Request) -> Response:
        model_id = rules.check_id(request.path_params["model_id"], "model id")
        doc = await run_in_threadpool(self.api.store.model, model_id)
        grant: Grant = request.state.grant
        if doc is None or not grant.allows(doc.get("project_id")):
            raise ApiError(
                404, f"no model {model_id!r}: no recording stored a kind='model' artifact"
            )
        base = self.api.public_url or str(request.base_url)
        name = doc["artifact"]["name"]
        doc = dict(doc)
        doc["download_url"] = (
            f"{base.rstrip('/')}/api/v1/recordings/{doc['recording_id']}/artifacts/{name}"
        )
        return json_response(doc)


def ranged(
    request: Request, blobs: BlobStore, hexdigest: str, size: int, media_type: str, name: str
) -> Response:
    """A store without local files (S3): the bytes, or the one range asked for (206; 416 past
    the end); a Range of several ranges, or one it cannot read, gets the whole file (200)."""
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"attachment; filename*=utf-8''{quote(name.split('/')[-1])}",
    }
    span = _range(request.headers.get("range", ""), size)
    if span is None:
        start, stop, status = 0, size, 200
    elif span[0] >= size:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    else:
        (start, stop), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    chunks = blobs.chunks(hexdigest, start, stop)  # a sync iterator: read in the thread pool
    return StreamingResponse(chunks, status_code=status, media_type=media_type, headers=headers)


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(start, stop) of `bytes=a-b`, `bytes=a-` or `bytes=-n`; None for anything else."""
    match = _ONE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:  # the last n bytes
        return (max(0, size - int(last)), size) if last and int(last) > 0 else None
    start = int(first)
    if last and int(last) < start:  # not a range at all: ignored, as RFC 9110 says
        return None
    return start, size if not last else min(size, int(last) + 1)


async def _bounded(request: Request, limit: int) -> Any:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"a part is at most {limit} bytes (artifact_part_bytes)")
        yield chunk


def _index(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, f"part index {raw[:20]!r} must be a non-negative integer")
    return int(raw)


def _entry(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """An artifact entry from a PUT body, checked field by field (400 naming the field)."""
    digest = body.get("digest")
    if not isinstance(digest, str):
        raise ApiError(400, "field digest is required: sha256:<hex>")
    hex_of(digest)
    kind = body.get("kind", "file")
    if kind not in KINDS:
        raise ApiError(400, f"field kind {kind!r} must be one of {', '.join(KINDS)}")
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "digest": digest,
        "media_type": text("media_type", body.get("media_type") or "application/octet-stream"),
        "metadata": rules.check_params("metadata", body.get("metadata")),
    }
    if body.get("step") is not None:
        entry["step"] = rules.check_step(body["step"])
    return entry


def artifact_routes(api: Api, blobs: BlobStore, max_artifact_bytes: int) -> list[Route]:
    """The artifact routes under /api/v1."""
    handlers = Artifacts(api, blobs, max_artifact_bytes)
    one = "/api/v1/recordings/{recording_id}/artifacts"
    return [
        route_by_method("/api/v1/blobs/{digest}", GET=handlers.blob, POST=handlers.commit),
        Route("/api/v1/blobs/{digest}/parts/{index}", handlers.put_part, methods=["PUT"]),
        Route(one, handlers.list, methods=["GET"]),
        route_by_method(one + "/{name:path}", GET=handlers.download, PUT=handlers.name),
        Route("/api/v1/models/{model_id}", handlers.model, methods=["GET"]),
    ]
