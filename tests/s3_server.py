"""A real S3-compatible server for tests: moto's, in a process of its own on 127.0.0.1:0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fixed throwaway credentials: moto accepts any; boto3 needs some to sign with.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_SERVE = """
import sys, threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin (or dies): then stop
server.stop()
"""


@dataclass
class S3Server:
    """The running server's endpoint and a bucket made on it."""

    endpoint: str
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix`: key -> bytes."""
        client = self.client()
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return {
            o["Key"]: client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
            for o in listed
        }


@contextmanager
def s3_server(workdir: Path, bucket: str = "markov-test") -> Iterator[S3Server]:
    """Start moto's server (its spooled object files under `workdir`), make `bucket`."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(workdir)}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline() or 0)
        assert port, "moto's server did not start"
        server = S3Server(f"http://127.0.0.1:{port}", bucket)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
