"""Bearer tokens: `TOKEN` (every project) or `TOKEN:PROJECT_ID` (one project's recordings); a
read token (`--read-token`, same spelling) sees what its scope allows and writes nothing.

Without configured tokens the backend is open and must only listen on loopback (`serve` refuses
anything else). Pages opened in a browser cannot send a header, so the pages also accept the token
from the `markov_token` cookie, which `?token=` on any page sets (then redirects it out of the URL).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ALL_PROJECTS", "COOKIE", "Grant", "TokenTable", "parse_tokens"]

COOKIE = "markov_token"
ALL_PROJECTS = None


@dataclass(frozen=True)
class Grant:
    """What a request may see: every project (`project_id is None`) or one; and whether it may
    write there (a read token's grant may not: the token gate refuses its writes)."""

    project_id: str | None
    writes: bool = True

    def allows(self, project_id: str | None) -> bool:
        """True when this grant may read or write a recording of `project_id`."""
        return self.project_id is None or self.project_id == (project_id or "")


OPEN = Grant(ALL_PROJECTS)


def parse_tokens(entries: Iterable[str], *, writes: bool = True) -> dict[str, Grant]:
    """`["t1", "t2:proj"]` -> {"t1": all projects, "t2": proj}; blank entries are skipped."""
    table: dict[str, Grant] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        token, sep, project = entry.partition(":")
        table[token] = Grant(project if sep and project else ALL_PROJECTS, writes)
    return table


class TokenTable:
    """Checks a presented token in constant time against the configured ones."""

    def __init__(self, entries: Iterable[str], read_entries: Iterable[str] = ()) -> None:
        # a token given both ways writes (the read entry cannot take a right away)
        self._grants = parse_tokens(read_entries, writes=False) | parse_tokens(entries)

    @property
    def enabled(self) -> bool:
        """False when no token is configured: every request is allowed."""
        return bool(self._grants)

    def grant_for(self, presented: str | None) -> Grant | None:
        """The grant of a presented token, OPEN when auth is off, None when refused."""
        if not self._grants:
            return OPEN
        if not presented:
            return None
        found = None
        for token, grant in self._grants.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = grant
        return found


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
