"""Wrong tokens slow an address down: past a few free mistakes, an address may have a token
checked only once per delay, and the delay doubles with each further wrong token.

Only distinct wrong tokens count: a stale cookie or a recorder with an old key sends the same
one again and again, which guesses nothing. Until its delay has passed, any token from that
address, the right one too, gets 429 with Retry-After instead of a check (a check that could
succeed is what a guesser wants, so the delay must hold for every token); after it the right
token is taken and the address starts afresh. Other addresses are never affected. The counts
live in one server process (each of `--workers` keeps its own) and are forgotten after
FORGET_AFTER seconds without a wrong token. Behind a proxy the address is the client's only
when the proxy is named by `--trusted-proxy`; otherwise every client shares the proxy's.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import Scope

from markov_otel.server.bodies import ApiError

__all__ = ["FREE_FAILURES", "MAX_DELAY", "WrongTokens", "client_address", "too_many"]

FREE_FAILURES = 10
"""Distinct wrong tokens an address may send before it is slowed down (typos, old keys)."""
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
FORGET_AFTER = 900.0
MAX_ADDRESSES = 10_000
"""Addresses remembered at once (the least recently wrong is forgotten first): bounded memory."""
RECENT_TOKENS = 8


@dataclass
class _Address:
    failures: int = 0
    next_check: float = 0.0
    last_failure: float = 0.0
    recent: list[bytes] = field(default_factory=list)


def client_address(scope: Scope) -> str:
    """The address a request came from (the client's behind a trusted proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def too_many(address: str, wait: int) -> ApiError:
    """The 429 for an address still waiting: how long, and why."""
    return ApiError(
        429,
        f"too many wrong tokens from {address}; no token from it is checked for {wait} s "
        "(Retry-After). Check the token: the one given to mkv serve --token",
        {"Retry-After": str(wait)},
    )


class WrongTokens:
    """Per-address counts of wrong tokens and when the next check may happen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    def wait(self, address: str) -> int:
        """Whole seconds before a token from `address` may be checked; 0 when it may be now."""
        entry = self._addresses.get(address)
        if entry is None:
            return 0
        now = self.clock()
        if now - entry.last_failure > FORGET_AFTER:
            del self._addresses[address]
            return 0
        return max(0, math.ceil(entry.next_check - now))

    def failed(self, address: str, token: str) -> None:
        """`address` presented a wrong `token`: count it if it is new, and set the delay."""
        now = self.clock()
        entry = self._addresses.pop(address, None) or _Address()
        self._addresses[address] = entry  # most recently wrong last
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)
        entry.last_failure = now
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()[:16]
        if digest in entry.recent:
            return
        entry.recent = [*entry.recent[-(RECENT_TOKENS - 1) :], digest]
        entry.failures += 1
        beyond = entry.failures - FREE_FAILURES
        if beyond > 0:
            entry.next_check = now + min(FIRST_DELAY * 2.0 ** min(beyond - 1, 30), MAX_DELAY)

    def succeeded(self, address: str) -> None:
        """The right token came from `address`: it starts afresh."""
        self._addresses.pop(address, None)
