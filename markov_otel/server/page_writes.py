"""Edits made on the pages: a run's name, notes and tags, written with the sign-in cookie.

The cookie alone never writes (browser_auth.py). A page write is a `PATCH
/api/v1/recordings/{id}` whose cookie counts only when the request also carries the page's CSRF
token in the `X-Markov-CSRF` header, the browser says it comes from this server's own pages
(`Sec-Fetch-Site: same-origin`, when it says anything), and the body changes nothing but
`name`, `notes` and `tags`. The token is an HMAC of a fixed text keyed by the session's own
token (the cookie's value): every process of a deployment derives the same one with no shared
secret and no state, it changes with the session, and a page of another site can neither read
it (the same-origin policy; no framing, CSP frame-ancestors) nor compute it (that needs the
HttpOnly cookie). A form on another site cannot set a header at all, and `edges.py` refuses its
POST before it gets here. What the token then writes is bounded by its grant, as for any
client: a token scoped to one project edits only that project's runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

from starlette.requests import Request

from markov_otel.server.auth import COOKIE

__all__ = ["CSRF_HEADER", "PAGE_FIELDS", "csrf_refusal", "csrf_token", "is_page_write", "page_csrf"]

CSRF_HEADER = "x-markov-csrf"
PAGE_FIELDS = frozenset({"name", "notes", "tags"})
"""What a page may change; status, times, parameters and the rest are the recorder's."""
_ONE_RECORDING = re.compile(r"/api/v1/recordings/[^/]+")
_PURPOSE = b"markov page write v1"


def csrf_token(session_token: str) -> str:
    """The CSRF token of the session whose cookie holds `session_token`."""
    mac = hmac.new(session_token.encode(), _PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode()


def page_csrf(request: Request) -> str:
    """The CSRF token a page embeds for its scripts ("" without a cookie: nothing to guard)."""
    cookie = request.cookies.get(COOKIE)
    return csrf_token(cookie) if cookie else ""


def is_page_write(method: str, path: str) -> bool:
    """True for the one write the cookie may make (with the CSRF token): PATCH of a run."""
    return method == "PATCH" and _ONE_RECORDING.fullmatch(path) is not None


def csrf_refusal(headers: Mapping[str, str], session_token: str) -> str | None:
    """Why a page write with the cookie `session_token` is refused (a 403's reason), else None."""
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return (
            f"a page write with the sign-in cookie must come from this server's own pages "
            f"(Sec-Fetch-Site: {site}, not same-origin)"
        )
    presented = headers.get(CSRF_HEADER)
    if not presented:
        return (
            "missing CSRF token: a page write with the sign-in cookie carries the page's token "
            "in the X-Markov-CSRF header; reload the page and try again"
        )
    if not hmac.compare_digest(presented.encode(), csrf_token(session_token).encode()):
        return (
            "wrong CSRF token: X-Markov-CSRF is not this session's (signed in with another token "
            "since the page was opened?); reload the page and try again"
        )
    return None
