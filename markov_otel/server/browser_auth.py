"""How a browser signs in: the login form, the `markov_token` cookie, the routes it opens.

A page asked for by a browser (`Accept: text/html`) without a valid token answers the login form
(still status 401); posting a token sets the HttpOnly cookie and redirects back to the page first
asked for. Only a same-site path is ever a redirect target. API clients keep the JSON 401. The
cookie opens the pages and the GET reads the pages' scripts make; it writes only together with
the page's CSRF token (page_writes.py), so a form on another site cannot act with it (and
SameSite=Strict keeps it off cross-site requests anyway).
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from markov_otel.server.auth import COOKIE, TokenTable
from markov_otel.server.backoff import WrongTokens, client_address, too_many
from markov_otel.server.bodies import ApiError, read_body
from markov_otel.server.layout import layout

__all__ = [
    "LOGIN_PATH",
    "cookie_opens",
    "is_page",
    "login_form",
    "login_routes",
    "safe_next",
    "set_session_cookie",
]

LOGIN_PATH = "/login"
_PAGE_PREFIXES = ("/recordings/", "/projects/", "/compare")
_COOKIE_READS = ("/api/v1/series", "/api/v1/quantiles", "/api/v1/recordings", "/api/v1/runs-table")
_MAX_FORM_BYTES = 8192


def is_page(path: str) -> bool:
    """True for the HTML pages (which a browser opens without an Authorization header)."""
    return path == "/" or path.startswith(_PAGE_PREFIXES)


def cookie_opens(method: str, path: str) -> bool:
    """True where the cookie counts: the pages and the reads their scripts make (GET only)."""
    if method not in ("GET", "HEAD"):
        return False
    return is_page(path) or path.startswith(_COOKIE_READS)


def wants_login_form(request: Request) -> bool:
    """A browser opening a page (not a script or an API client)."""
    accept = request.headers.get("accept", "")
    return request.method in ("GET", "HEAD") and is_page(request.url.path) and "text/html" in accept


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site (`/…`, not `//host` nor `/\\host`), else `/`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def login_form(next_path: str, *, error: str = "", status: int = 401) -> Response:
    """The sign-in page; `next_path` is where a good token leads."""
    note = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""<section class="login"><h1>Sign in</h1>
<p>This backend needs a token: the one given to <code>mkv serve --token</code> (or
<code>MARKOV_SERVER_TOKENS</code>), the same value as the recorder's <code>api_key</code>.</p>
{note}<form method="post" action="{LOGIN_PATH}">
<input type="hidden" name="next" value="{escape(safe_next(next_path))}">
<label>Token <input type="password" name="token" autocomplete="current-password" required
 autofocus></label> <button type="submit">Sign in</button></form>
<p class="hint">The token is kept in an HttpOnly cookie of this site only.</p></section>"""
    response = layout("sign in", body, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="markov"'
    return response


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """The `markov_token` cookie: HttpOnly, SameSite=Strict, and Secure when the request came
    over TLS (to uvicorn itself, or to a proxy named by `--trusted-proxy` that says so in
    X-Forwarded-Proto), so a browser never sends it over plain HTTP afterwards."""
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure)


def login_routes(tokens: TokenTable, wrong: WrongTokens) -> list[Route]:
    """GET /login (the form) and POST /login (check the token, set the cookie, go back); a
    wrong token counts against the address like any other (backoff.py)."""

    async def show(request: Request) -> Response:
        return login_form(request.query_params.get("next") or "/", status=200)

    async def submit(request: Request) -> Response:
        try:
            body = await read_body(request, _MAX_FORM_BYTES)  # gzip as on every route
        except ApiError as exc:
            return login_form("/", error=exc.reason, status=exc.status)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        token = (form.get("token") or [""])[0].strip()
        target = safe_next((form.get("next") or ["/"])[0])
        address = client_address(request.scope)
        wait = wrong.wait(address)
        if wait:
            slowed = login_form(target, error=too_many(address, wait).reason, status=429)
            slowed.headers["Retry-After"] = str(wait)
            return slowed
        if not token or tokens.grant_for(token) is None:
            if token:
                wrong.failed(address, token)
            return login_form(target, error="That token is not one this backend accepts.")
        wrong.succeeded(address)
        response = RedirectResponse(target, 303)
        set_session_cookie(response, request, token)
        return response

    return [Route(LOGIN_PATH, show, methods=["GET"]), Route(LOGIN_PATH, submit, methods=["POST"])]
