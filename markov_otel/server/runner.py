"""`serve()`: bind, write the port file once listening, run uvicorn until interrupted.

With `workers > 1` (PostgreSQL only) the parent binds the socket, checks the database once
(connection, tables) and runs uvicorn's process supervisor: each worker process builds its own
app (`create_app`, its own connection) and accepts on the shared socket. Workers keep no state
between requests that another worker would need: everything lives in the database, and every
write that two of them could race on is settled there (see sqlstore.py and seriesstore.py).
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from markov_otel.errors import ConfigError
from markov_otel.rules import DEFAULT_MAX_ARTIFACT_BYTES
from markov_otel.server.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_INGEST,
    create_app,
)
from markov_otel.server.gate import DEFAULT_BODY_TIMEOUT, DEFAULT_MIN_BODY_RATE
from markov_otel.server.options import HTTP_PARSERS

__all__ = ["TOKENS_ENV", "is_loopback", "serve", "trusted_networks"]

TOKENS_ENV = "MARKOV_SERVER_TOKENS"
"""Comma-separated accepted tokens (`T` or `T:PROJECT_ID`), added to those given to `serve`."""
READ_TOKENS_ENV = "MARKOV_SERVER_READ_TOKENS"
"""The same for tokens that only read (`read_tokens`)."""


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    db: str = "sqlite:///markov-server.db",
    tokens: Sequence[str] = (),
    read_tokens: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    port_file: str | None = None,
    public_url: str | None = None,
    max_concurrent_ingest: int = DEFAULT_MAX_CONCURRENT_INGEST,
    workers: int = 1,
    trusted_proxies: Sequence[str] = (),
    open_server: bool = False,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    min_body_rate: int = DEFAULT_MIN_BODY_RATE,
    artifacts: str | None = None,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    s3_endpoint: str | None = None,
    http: str = "auto",
) -> None:
    """Run the backend until interrupted; with `port=0`, the bound port goes to `port_file`.

    Accepted tokens are `tokens` plus those in MARKOV_SERVER_TOKENS (comma-separated), and
    `read_tokens` plus MARKOV_SERVER_READ_TOKENS, which may read but never write. With
    none, it refuses to start unless `open_server` (`--open`) asks for a server without
    authentication, which may only listen on loopback and says so in one line on stderr.
    `workers` processes serve the port; more than one needs PostgreSQL. Each takes up to
    `max_concurrent_ingest` bodies at once. X-Forwarded-For/-Proto are believed only from the
    `trusted_proxies` addresses (IPs or CIDRs); by default from nobody. `http` is uvicorn's
    parser (options.HTTP_PARSERS); either way server/edges.py frames requests the same.
    """
    tokens = [t for t in [*tokens, *os.environ.get(TOKENS_ENV, "").split(",")] if t.strip()]
    readers = [t for t in [*read_tokens, *os.environ.get(READ_TOKENS_ENV, "").split(",")]]
    read_tokens = [t for t in readers if t.strip()]
    if max_body_bytes <= 0:
        raise ConfigError(f"max_body_bytes={max_body_bytes!r} must be a positive number of bytes")
    check_workers(workers, db)
    check_open([*tokens, *read_tokens], open_server, host)
    check_http(http)
    proxies = trusted_networks(trusted_proxies)
    make_app = functools.partial(
        create_app,
        db=db,
        tokens=tokens,
        read_tokens=read_tokens,
        max_body_bytes=max_body_bytes,
        public_url=public_url,
        max_concurrent_ingest=max_concurrent_ingest,
        body_timeout=body_timeout,
        min_body_rate=min_body_rate,
        artifacts=artifacts,
        max_artifact_bytes=max_artifact_bytes,
        s3_endpoint=s3_endpoint,
    )
    # One process: the app now. Several: each worker makes its own from this (picklable)
    # factory; the parent opens the database once first, so that a bad --db or flag fails
    # here, with its message, not in workers that the supervisor would restart forever.
    app: Any = make_app() if workers == 1 else make_app
    if workers > 1:
        make_app().state.store.close()
    sock = bind(host, port)
    if not tokens:
        print(
            f"markov server: OPEN, no token: anyone who can reach {host}:"
            f"{sock.getsockname()[1]} reads and writes every recording (--open)",
            file=sys.stderr,
            flush=True,
        )
    if port_file is not None:
        write_port_file(port_file, sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        workers=workers,
        factory=workers > 1,
        # uvicorn believes 127.0.0.1 by default (and FORWARDED_ALLOW_IPS); we believe only
        # the proxies the operator names, so no client can claim another address or https.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
        http=http,
    )
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()


def check_workers(workers: int, db: str) -> None:
    """Refuse a worker count serve() cannot honour: < 1, or > 1 over SQLite."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer, e.g. --workers 2")
    if workers > 1 and not db.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"--workers {workers} needs PostgreSQL (--db postgresql://user@host/db): SQLite "
            "takes one writer at a time, so more processes over one file only wait on its lock"
        )


def check_http(http: str) -> None:
    """Refuse a parser uvicorn does not have, or httptools when it is not installed."""
    if http not in HTTP_PARSERS:
        raise ConfigError(f"http={http!r} must be one of {', '.join(HTTP_PARSERS)}")
    if http == "httptools" and importlib.util.find_spec("httptools") is None:
        raise ConfigError(
            "--http httptools needs the httptools package, which the [server] extra installs: "
            "pip install 'markov-otel[server]' (or --http h11)"
        )


def check_open(tokens: Sequence[str], open_server: bool, host: str) -> None:
    """Refuse a server without tokens unless asked for by `--open` (and then only on loopback),
    and `--open` beside a token."""
    if tokens and open_server:
        raise ConfigError(
            "--open and a token (--token or MARKOV_SERVER_TOKENS) contradict each other; drop "
            "--open to require the token, or drop the tokens for an open loopback server"
        )
    if not tokens and not open_server:
        raise ConfigError(
            "no token is configured, so every recording would be open to anyone who can reach "
            "the server; give --token TOKEN (or MARKOV_SERVER_TOKENS), or --open for a server "
            "without authentication on loopback only"
        )
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"host={host!r} is not a loopback address and no token is configured; an open "
            "backend may only listen on 127.0.0.1/::1. Give --token (or MARKOV_SERVER_TOKENS)."
        )


def trusted_networks(addresses: Sequence[str]) -> list[str]:
    """The `--trusted-proxy` values as networks uvicorn takes; ConfigError for one that is not
    an IP address or a CIDR network."""
    networks = []
    for address in addresses:
        try:
            networks.append(str(ipaddress.ip_network(address.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"--trusted-proxy {address!r} is not an IP address or network; name the "
                "proxy's address as the server sees it, e.g. --trusted-proxy 127.0.0.1"
            ) from None
    return networks


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
