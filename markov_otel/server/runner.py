"""`serve()`: bind, write the port file once listening, run uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from markov_otel.errors import ConfigError
from markov_otel.server.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_INGEST,
    create_app,
)

__all__ = ["TOKENS_ENV", "is_loopback", "serve"]

TOKENS_ENV = "MARKOV_SERVER_TOKENS"
"""Comma-separated accepted tokens (`T` or `T:PROJECT_ID`), added to those given to `serve`."""


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    db: str = "sqlite:///markov-server.db",
    tokens: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    port_file: str | None = None,
    public_url: str | None = None,
    max_concurrent_ingest: int = DEFAULT_MAX_CONCURRENT_INGEST,
) -> None:
    """Run the backend until interrupted; with `port=0`, the bound port goes to `port_file`.

    Accepted tokens are `tokens` plus those in MARKOV_SERVER_TOKENS (comma-separated).
    """
    tokens = [t for t in [*tokens, *os.environ.get(TOKENS_ENV, "").split(",")] if t.strip()]
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"host={host!r} is not a loopback address and no token is configured; an open "
            "backend may only listen on 127.0.0.1/::1. Give --token (or MARKOV_SERVER_TOKENS)."
        )
    if max_body_bytes <= 0:
        raise ConfigError(f"max_body_bytes={max_body_bytes!r} must be a positive number of bytes")
    app = create_app(
        db=db,
        tokens=tokens,
        max_body_bytes=max_body_bytes,
        public_url=public_url,
        max_concurrent_ingest=max_concurrent_ingest,
    )
    sock = bind(host, port)
    if port_file is not None:
        write_port_file(port_file, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (SO_REUSEADDR, so a restart can take the same port)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def write_port_file(path: str, port: int) -> None:
    """Write the port atomically, so a reader never sees a half-written number."""
    target = Path(path)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, target)
