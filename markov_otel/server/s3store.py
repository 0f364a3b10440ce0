"""BlobStore on S3-compatible object storage, through boto3 (`--artifacts s3://bucket/prefix`).

Keys under the prefix:

    blobs/<64 hex>      committed bytes, verified, stored once whatever the runs naming them
    uploads/<64 hex>    the S3 multipart upload of an upload not committed yet: part i of the
                        protocol is S3 part i+1, so a part sent twice is replaced, not added

Commit completes the multipart upload (S3 joins the parts), reads the joined object back once
to check its size and SHA-256, and only then copies it to `blobs/` (boto3's managed copy: a
server-side copy, in parts past 5 GB) and deletes the upload's object; bytes that do not match
never reach `blobs/`. Reads are ranged GETs. Memory stays bounded by one part (the upload route
holds one) and one chunk when reading back. The endpoint, region and credentials are boto3's
usual ones (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ~/.aws/…), or `--s3-endpoint URL`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from markov_otel.errors import ConfigError
from markov_otel.server.blobstore import CHUNK, BlobRefused

S3_EXTRA_LINE = "pip install 'markov-otel[s3]'"
MIN_PART_BYTES = 5 << 20
"""S3 refuses to join parts under 5 MiB (but the last)."""
EMPTY = hashlib.sha256(b"").hexdigest()


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, "prefix/"); a ConfigError naming a URL without one."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"--artifacts {url!r} names no bucket; use s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(endpoint: str | None) -> Any:
    """A boto3 S3 client (path-style addressing when an endpoint is given, as MinIO and other
    S3-compatible servers expect); a ConfigError with the pip line when boto3 is missing."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError(
            f"--artifacts s3://… needs boto3 ({exc}); install it with: {S3_EXTRA_LINE}"
        ) from None
    style = {"addressing_style": "path"} if endpoint else {}
    config = Config(s3=style, retries={"mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, config=config)


class S3BlobStore:
    """BlobStore on a bucket and key prefix of S3 or an S3-compatible server."""

    def __init__(self, url: str, part_bytes: int, endpoint: str | None = None) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ConfigError(
                f"--artifacts {url} makes parts of {part_bytes} bytes (--max-body-bytes), under "
                f"S3's 5 MiB minimum; raise --max-body-bytes to at least {MIN_PART_BYTES}"
            )
        self.bucket, self.prefix = parse_s3_url(url)
        self.part_bytes = part_bytes
        self.client = s3_client(endpoint)
        self._errors = _client_errors()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            raise ConfigError(
                f"--artifacts {url}: bucket {self.bucket!r} cannot be reached ({exc}); create "
                "it, or check the endpoint (--s3-endpoint, AWS_ENDPOINT_URL) and credentials"
            ) from None

    def _key(self, folder: str, hexdigest: str) -> str:
        return f"{self.prefix}{folder}/{hexdigest}"

    def path(self, hexdigest: str) -> Path | None:
        return None  # no local file: downloads are ranged GETs (chunks)

    def size(self, hexdigest: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key("blobs", hexdigest))
        except self._errors as exc:
            if _status(exc) == 404:
                return None
            raise
        return int(head["ContentLength"])

    def _upload_id(self, hexdigest: str, create: bool) -> str | None:
        """The multipart upload of this digest: the oldest (two started at once: one wins)."""
        key = self._key("uploads", hexdigest)
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        found = [u for u in listed.get("Uploads", []) if u["Key"] == key]
        if found:
            return str(min(found, key=lambda u: (u["Initiated"], u["UploadId"]))["UploadId"])
        if not create:
            return None
        made = str(self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])
        return self._upload_id(hexdigest, create=False) or made  # two made at once: the oldest

    def parts(self, hexdigest: str) -> dict[int, int]:
        upload = self._upload_id(hexdigest, create=False)
        return {} if upload is None else self._parts(hexdigest, upload)

    def _parts(self, hexdigest: str, upload: str) -> dict[int, int]:
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=self._key("uploads", hexdigest), UploadId=upload
        )
        return {p["PartNumber"] - 1: p["Size"] for page in pages for p in page.get("Parts", [])}

    def put_part(self, hexdigest: str, index: int, chunks: Iterable[bytes]) -> int:
        """Upload part `index` (S3 part index+1): sent twice, the second replaces the first."""
        body = b"".join(chunks)
        upload = self._upload_id(hexdigest, create=True)
        self.client.upload_part(
            Bucket=self.bucket, Key=self._key("uploads", hexdigest), UploadId=upload,
            PartNumber=index + 1, Body=body,
        )  # fmt: skip
        return len(body)

    def commit(self, hexdigest: str, size: int, parts: int) -> None:
        """Join parts 0..parts-1, check they make `size` bytes of this SHA-256, then store them
        under blobs/; a no-op for bytes already stored (the same file from another run)."""
        if self.size(hexdigest) is not None:
            self._abort(hexdigest)
            return
        if size == 0 and hexdigest == EMPTY:  # S3 joins no upload of zero parts
            self.client.put_object(Bucket=self.bucket, Key=self._key("blobs", hexdigest), Body=b"")
            return
        upload = self._upload_id(hexdigest, create=False)
        held = {} if upload is None else self._parts(hexdigest, upload)
        missing = [i for i in range(parts) if i not in held]
        if upload is None or missing or parts == 0:
            raise BlobRefused(f"parts {missing[:10]} of sha256:{hexdigest} were not uploaded")
        staged = self._key("uploads", hexdigest)
        try:
            self._join(hexdigest, upload, parts)
        except BlobRefused:
            if self.size(hexdigest) is not None:  # a commit of the same bytes got there first
                return
            raise
        try:
            self._check(staged, hexdigest, size)
            source = {"Bucket": self.bucket, "Key": staged}
            self.client.copy(source, self.bucket, self._key("blobs", hexdigest))
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=staged)
        self._abort(hexdigest)  # an upload a racing client started and lost, if any

    def _join(self, hexdigest: str, upload: str, parts: int) -> None:
        listed = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=self._key("uploads", hexdigest), UploadId=upload
        )
        etags = {p["PartNumber"]: p["ETag"] for page in listed for p in page.get("Parts", [])}
        joined = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, parts + 1)]
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._key("uploads", hexdigest), UploadId=upload,
                MultipartUpload={"Parts": joined},
            )  # fmt: skip
        except self._errors as exc:  # e.g. a part but the last under 5 MiB
            self._abort(hexdigest)
            raise BlobRefused(f"the parts of sha256:{hexdigest} cannot be joined ({exc})") from None

    def _check(self, key: str, hexdigest: str, size: int) -> None:
        sha, written = hashlib.sha256(), 0
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(CHUNK):
            sha.update(chunk)
            written += len(chunk)
        if written != size or sha.hexdigest() != hexdigest:
            raise BlobRefused(
                f"the parts make {written} bytes with SHA-256 {sha.hexdigest()}, not the "
                f"{size} bytes of sha256:{hexdigest}; upload them again"
            )

    def _abort(self, hexdigest: str) -> None:
        """Drop every unfinished upload of this digest (the next part starts a new one)."""
        key = self._key("uploads", hexdigest)
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in listed.get("Uploads", []):
            if upload["Key"] == key:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                )

    def open(self, hexdigest: str) -> BinaryIO:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key("blobs", hexdigest))
        except self._errors as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(hexdigest) from None
            raise
        return cast(BinaryIO, answer["Body"])

    def chunks(self, hexdigest: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes start..stop-1 of a stored blob, a chunk at a time (one ranged GET)."""
        if stop <= start:
            return
        answer = self.client.get_object(
            Bucket=self.bucket, Key=self._key("blobs", hexdigest), Range=f"bytes={start}-{stop - 1}"
        )
        yield from answer["Body"].iter_chunks(CHUNK)


def _client_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None
