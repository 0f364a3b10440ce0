"""`python -m markov_otel.server --host H --port P --db URL --token T --port-file F --workers N`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from markov_otel.errors import MarkovError
from markov_otel.server.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_INGEST


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m markov_otel.server",
        description="Run the reference Markov backend: OTLP/HTTP ingest, REST API, pages.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470, help="0 picks a free port")
    parser.add_argument(
        "--db",
        default="sqlite:///markov-server.db",
        help="sqlite:///path, a file path, or postgresql://...",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted bearer token, TOKEN or TOKEN:PROJECT_ID (repeatable; "
        "also MARKOV_SERVER_TOKENS, comma-separated)",
    )
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--public-url", help="base of experiment_url (default: the request's)")
    parser.add_argument(
        "--max-concurrent-ingest",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_INGEST,
        help="request bodies read, parsed and stored at once; more get 503 + Retry-After "
        f"(default {DEFAULT_MAX_CONCURRENT_INGEST})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes over one PostgreSQL database (default 1; more needs PostgreSQL)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from markov_otel.server.runner import serve

        serve(
            host=args.host,
            port=args.port,
            db=args.db,
            tokens=args.token,
            max_body_bytes=args.max_body_bytes,
            port_file=args.port_file,
            public_url=args.public_url,
            max_concurrent_ingest=args.max_concurrent_ingest,
            workers=args.workers,
        )
    except MarkovError as exc:
        print(f"markov server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
