"""The serve command line: one set of options for `mkv serve` and `python -m markov_otel.server`.

It imports nothing of the server itself (starlette, uvicorn), so `mkv --help` and `mkv serve
--help` work without the [server] extra; `run()` imports the server when it starts one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from markov_otel.errors import ConfigError, MarkovError
from markov_otel.extras import missing_extra, pip_line
from markov_otel.rules import DEFAULT_MAX_ARTIFACT_BYTES, DEFAULT_MAX_BODY_BYTES

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT_INGEST",
    "DEFAULT_MIN_BODY_RATE",
    "HTTP_PARSERS",
    "add_arguments",
    "build_parser",
    "main",
    "run",
]

DEFAULT_MAX_CONCURRENT_INGEST = 4
"""Request bodies one server process parses and stores at once (server/gate.py)."""
DEFAULT_BODY_TIMEOUT = 10.0
"""Seconds a request body may take, beyond a second per DEFAULT_MIN_BODY_RATE bytes (gate.py)."""
DEFAULT_MIN_BODY_RATE = 16384
"""Bytes a second a request body must keep arriving at, after DEFAULT_BODY_TIMEOUT (gate.py)."""
HTTP_PARSERS = ("auto", "httptools", "h11")
"""uvicorn's HTTP/1.1 parsers; `auto` is httptools when installed (the [server] extra), else h11."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a serve command, added to `parser`; `run` is set as what it does."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8470, help="port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        default="sqlite:///markov-server.db",
        help="sqlite:///path or postgresql://user@host/db (default: %(default)s, in the "
        "current directory)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted bearer token, TOKEN or TOKEN:PROJECT_ID (repeatable); also "
        "MARKOV_SERVER_TOKENS, comma-separated. The server refuses to start without a token "
        "unless --open is given",
    )
    parser.add_argument(
        "--read-token",
        action="append",
        default=[],
        help="a token that reads but never writes (pages, API reads; any write is a 403), "
        "TOKEN or TOKEN:PROJECT_ID (repeatable); also MARKOV_SERVER_READ_TOKENS",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="run without any token: every page and API call is allowed, on a loopback "
        "address only, and the server says so when it starts",
    )
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        help="address (IP or CIDR) of a reverse proxy whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed: the client address and https behind it, so the "
        "session cookie is Secure (repeatable; default: none, forwarded headers are ignored)",
    )
    parser.add_argument(
        "--public-url",
        help="base of experiment_url links (default: the address each request came to)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (default: %(default)s; more than one needs "
        "--db postgresql://…)",
    )
    parser.add_argument(
        "--max-concurrent-ingest",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_INGEST,
        help="request bodies each process parses and stores at once (a body takes its slot once "
        "it has arrived; one project at most all but one); more get 503 + Retry-After "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds a request body may take beyond one second per --min-body-rate bytes; a "
        "slower body is cut with 408 (default: %(default)s)",
    )
    parser.add_argument(
        "--min-body-rate",
        type=int,
        default=DEFAULT_MIN_BODY_RATE,
        help="bytes a second a request body must keep arriving at (default: %(default)s)",
    )
    parser.add_argument(
        "--http",
        choices=HTTP_PARSERS,
        default="auto",
        help="HTTP/1.1 parser: httptools (C, the [server] extra's, faster per request) or h11 "
        "(pure Python); auto takes httptools when installed (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="where uploaded files are stored once by SHA-256: a directory (default: beside the "
        "SQLite file as FILE.artifacts, else ./markov-artifacts), or s3://BUCKET/PREFIX for "
        "S3-compatible object storage (pip install 'markov-otel[s3]'; credentials and region "
        "from the usual AWS_* variables)",
    )
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="the S3-compatible server of --artifacts s3://… (MinIO, Ceph, …; default: "
        "AWS_ENDPOINT_URL, else AWS S3 itself)",
    )
    parser.add_argument(
        "--max-artifact-bytes",
        type=int,
        default=DEFAULT_MAX_ARTIFACT_BYTES,
        help="largest artifact accepted (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Start the server the parsed options describe; returns when it is interrupted."""
    try:
        from markov_otel.server.runner import serve
    except ImportError as exc:  # the [server] extra is not installed: say the line that is
        extra = missing_extra(exc)
        if extra is None:
            raise
        raise ConfigError(
            f"serving needs the [{extra}] extra ({exc.name} is missing here): {pip_line(extra)}"
        ) from None
    print(f"markov server: http://{args.host}:{args.port} (db {args.db})", file=sys.stderr)
    serve(  # serve() adds the tokens in MARKOV_SERVER_TOKENS
        host=args.host,
        port=args.port,
        db=args.db,
        tokens=args.token,
        read_tokens=args.read_token,
        max_body_bytes=args.max_body_bytes,
        port_file=args.port_file,
        public_url=args.public_url,
        max_concurrent_ingest=args.max_concurrent_ingest,
        workers=args.workers,
        trusted_proxies=args.trusted_proxy,
        open_server=args.open,
        body_timeout=args.body_timeout,
        min_body_rate=args.min_body_rate,
        artifacts=args.artifacts,
        s3_endpoint=args.s3_endpoint,
        max_artifact_bytes=args.max_artifact_bytes,
        http=args.http,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m markov_otel.server",
        description="Run the reference Markov backend: OTLP/HTTP ingest, REST API, pages.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m markov_otel.server`: our errors become one line on stderr and exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MarkovError as exc:
        print(f"markov server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
