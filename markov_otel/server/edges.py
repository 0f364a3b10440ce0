"""What every request meets at the door, before the token gate: ambiguous framing (request
smuggling) refused and the connection closed, writes from other sites refused (403: login CSRF
and any forged write), and the headers every answer carries (Content-Security-Policy,
Referrer-Policy, nosniff).

Framing: a request with both Content-Length and Transfer-Encoding is read one way by a proxy
and the other way by the server, so bytes one of them takes for a body the other takes for a
second request (RFC 9112 §6.1 lets a server refuse it and requires closing the connection).
uvicorn's httptools parser (the default where the [server] extra is installed) refuses such a
request itself (a bare 400, connection closed) before the app sees it; h11 (`--http h11`, or
where httptools is missing) frames it by Transfer-Encoding and keeps the connection open, so
this check answers 400 naming both headers with `Connection: close`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from markov_otel.server.api import json_response

__all__ = ["SECURITY_HEADERS", "HttpEdges", "cross_site"]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""Scripts and styles only from /static; inline style attributes (the legend swatches' colour)
allowed; no framing by any site (clickjacking)."""

SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
"""On every answer: pages, API, static files and errors alike."""
_ENCODED = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class HttpEdges:
    """ASGI middleware: framing and cross-site checks on the way in, headers on the way out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_headers(send)
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            refusal = json_response(
                {
                    "error": "request has both Content-Length and Transfer-Encoding, which "
                    "frame its body two ways (RFC 9112, section 6.1); send only one"
                },
                400,
            )
            refusal.headers["Connection"] = "close"
            await refusal(scope, receive, send)
            return
        reason = cross_site(scope)
        if reason is not None:
            await json_response({"error": reason}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def cross_site(scope: Scope) -> str | None:
    """Why a write comes from a page of another site (a forged form or script), else None.

    Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser), else
    `Origin`. Only this server's own pages may write (`same-origin`), or the person at the
    address bar (`none`). API clients (the recorder, collectors, curl) send neither header, and
    their writes carry a bearer token that no other site has.
    """
    if scope["method"] in SAFE_METHODS:
        return None
    headers = {name.lower(): value for name, value in scope["headers"]}
    path = scope["path"]
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        if site in (b"same-origin", b"none"):
            return None
        return (
            f"{scope['method']} {path} from another site (Sec-Fetch-Site: {site.decode('latin-1')})"
            " is refused; use this server's own pages, or an API client with a bearer token"
        )
    origin = headers.get(b"origin")
    if origin is None:
        return None
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if urlsplit(origin.decode("latin-1").lower()).netloc == host and host:
        return None
    return (
        f"{scope['method']} {path} from another site (Origin: {origin.decode('latin-1')}, not "
        f"this server's {host or 'host'}) is refused; use this server's own pages, or an API "
        "client with a bearer token"
    )


def with_headers(send: Send) -> Send:
    """`send` with SECURITY_HEADERS added to the response start (those not already set)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend(pair for pair in _ENCODED if pair[0] not in present)
            message = {**message, "headers": headers}
        await send(message)

    return sending
