"""The ASGI app: routes, the bearer-token gate, error bodies; `create_app` builds it.

Public without a token: `/healthz`, `/openapi.json` and `/static/*` (no recorded data). Every
other route needs `Authorization: Bearer <token>` when tokens are configured; the HTML pages also
take the `markov_token` cookie that `?token=` sets (see `auth.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from markov_otel.errors import ConfigError
from markov_otel.rules import DEFAULT_MAX_ARTIFACT_BYTES, DEFAULT_MAX_BODY_BYTES
from markov_otel.server.api import Api, api_routes, json_response, part_bytes
from markov_otel.server.artifactindex import adopt_json_index
from markov_otel.server.artifacts import artifact_routes
from markov_otel.server.auth import COOKIE, TokenTable, bearer
from markov_otel.server.backoff import WrongTokens, client_address, too_many
from markov_otel.server.blobstore import BlobStore, FileBlobStore, default_dir
from markov_otel.server.bodies import JSON, PROTOBUF, ApiError
from markov_otel.server.browser_auth import (
    LOGIN_PATH,
    cookie_opens,
    is_page,
    login_form,
    login_routes,
    wants_login_form,
)
from markov_otel.server.edges import SAFE_METHODS, HttpEdges
from markov_otel.server.gate import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_INGEST,
    DEFAULT_MIN_BODY_RATE,
    IngestGate,
)
from markov_otel.server.history import history_routes
from markov_otel.server.ingest import error_response, ingest_endpoint
from markov_otel.server.lanes import ReadLane
from markov_otel.server.openapi import openapi_document
from markov_otel.server.page_writes import csrf_refusal, is_page_write
from markov_otel.server.pages import page_routes
from markov_otel.server.quantiles import quantile_routes
from markov_otel.server.runs_table import runs_table_routes
from markov_otel.server.series import series_routes
from markov_otel.server.storage import Store, StoreRefused, open_store

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONCURRENT_INGEST", "create_app"]
STATIC_DIR = Path(__file__).parent / "static"
_PUBLIC = ("/healthz", "/openapi.json", LOGIN_PATH)


def create_app(
    *,
    db: str,
    tokens: list[str],
    read_tokens: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    public_url: str | None = None,
    max_concurrent_ingest: int = DEFAULT_MAX_CONCURRENT_INGEST,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    min_body_rate: int = DEFAULT_MIN_BODY_RATE,
    artifacts: str | None = None,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    s3_endpoint: str | None = None,
) -> Starlette:
    """The backend app over the store named by `db`; `tokens` entries are `T` or `T:PROJECT`,
    `read_tokens` the same for tokens that read only (any write: 403).

    At most `max_concurrent_ingest` request bodies are parsed and stored at once (one project:
    all but one of them); past that a request gets 503 with Retry-After. A body slower than
    `body_timeout` s plus a second per `min_body_rate` bytes gets 408 (see gate.py). Files go to
    the directory `artifacts` (default: beside a SQLite file, see blobstore.py), or to the
    bucket of an `s3://bucket/prefix` (s3store.py, on `s3_endpoint` if given).
    """
    gate = IngestGate(max_concurrent_ingest, body_timeout=body_timeout, min_body_rate=min_body_rate)
    store = open_store(db)
    blobs = blob_store(artifacts, db, store, part_bytes(max_body_bytes), s3_endpoint)
    lane = ReadLane(ingesting=gate.working)
    files = Api(store, max_body_bytes, public_url, gate, lane)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    table, wrong = TokenTable(tokens, read_tokens), WrongTokens()
    app = Starlette(
        routes=[
            *artifact_routes(files, blobs, max_artifact_bytes),
            *routes(
                store,
                max_body_bytes,
                public_url,
                gate,
                lane,  # one lane: its bound on reader threads is the app's
                max_artifact_bytes,
            ),
            *login_routes(table, wrong),
        ],
        exception_handlers={
            ApiError: api_error,
            ConfigError: refused,
            StoreRefused: refused,
            HTTPException: http_error,
        },
        lifespan=lifespan,
    )
    app.add_middleware(TokenGate, tokens=table, wrong=wrong)
    app.add_middleware(HttpEdges)  # outermost: before the token gate
    app.state.store = store
    app.state.blobs = blobs  # the run page lists its files (artifact_page.py)
    return app


def blob_store(
    artifacts: str | None, db: str, store: Store, part: int, s3_endpoint: str | None
) -> BlobStore:
    """The BlobStore `--artifacts` names: a bucket for s3://…, else a directory (whose older
    JSON index, if any, is read into `store` once)."""
    if artifacts and artifacts.startswith("s3://"):
        from markov_otel.server.s3store import S3BlobStore  # boto3: the [s3] extra

        return S3BlobStore(artifacts, part, s3_endpoint)
    if s3_endpoint:
        raise ConfigError(
            f"--s3-endpoint {s3_endpoint} is for --artifacts s3://bucket/prefix; "
            f"--artifacts is {artifacts or 'a directory (the default)'}"
        )
    root = Path(artifacts) if artifacts else default_dir(db)
    adopt_json_index(root, store)  # an older backend's index files, read into the tables once
    return FileBlobStore(root, part)


def routes(
    store: Store,
    limit: int,
    public_url: str | None,
    gate: IngestGate,
    reads: ReadLane,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
) -> list[Route | Mount]:
    """Every route of the backend: bodies go through `gate`, reads run in `reads` (lanes.py),
    so ingest never waits behind a read."""
    ingest = [
        Route(f"/v1/{signal}", ingest_endpoint(signal, store, limit, gate), methods=["POST"])
        for signal in ("metrics", "traces", "logs")
    ]
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *ingest,
        *api_routes(store, limit, public_url, gate, reads, max_artifact_bytes),
        *series_routes(store, reads),
        *quantile_routes(store, reads),
        *history_routes(store, reads),
        *runs_table_routes(store, reads),
        *page_routes(store, reads),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = json_response({"error": exc.reason}, exc.status)
    response.headers.update(exc.headers)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def refused(request: Request, exc: Exception) -> Response:
    """A value the rules (ConfigError) or the database (StoreRefused) refuse: 400, its reason."""
    return json_response({"error": str(exc)}, 400)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = json_response({"error": exc.detail}, exc.status_code)
    response.headers.update(exc.headers or {})
    return response


class TokenGate:
    """ASGI middleware: 401 unless the request carries a configured token; sets state.grant.
    Wrong tokens slow their address down (429 + Retry-After, see backoff.py)."""

    def __init__(self, app: ASGIApp, tokens: TokenTable, wrong: WrongTokens) -> None:
        self.app, self.tokens, self.wrong = app, tokens, wrong

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path: str = scope["path"]
        presented = bearer(request.headers.get("authorization"))
        if presented is None and is_page(path):
            presented = request.query_params.get("token")
        if presented is None and cookie_opens(scope["method"], path):
            presented = request.cookies.get(COOKIE)
        page_write = False
        if presented is None and is_page_write(scope["method"], path):
            presented = request.cookies.get(COOKIE)
            page_write = presented is not None
            reason = csrf_refusal(request.headers, presented) if presented else None
            if reason is not None:
                await json_response({"error": reason}, 403)(scope, receive, send)
                return
        public = path in _PUBLIC or path.startswith("/static/")
        if presented is not None and self.tokens.enabled and not public:
            address = client_address(scope)
            wait = self.wrong.wait(address)
            if wait:
                error = too_many(address, wait)
                await refusal(request, error, error.reason)(scope, receive, send)
                return
            grant = self.tokens.grant_for(presented)
            if grant is None:
                self.wrong.failed(address, presented)
            else:
                self.wrong.succeeded(address)
        else:
            grant = self.tokens.grant_for(presented)
        if grant is None and not public:
            note = "" if presented is None else "That token is not valid here."
            await refusal(request, unauthorized(presented), note)(scope, receive, send)
            return
        if grant is not None and not grant.writes and scope["method"] not in SAFE_METHODS:
            reason = (
                f"{scope['method']} {path}: this token reads only (given with --read-token); "
                "writes need a token given with --token"
            )
            await refusal(request, ApiError(403, reason), reason)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["grant"] = grant or self.tokens.grant_for(None)
        state["page_write"] = page_write  # the cookie wrote: only PAGE_FIELDS (page_writes.py)
        await self.app(scope, receive, send)


def unauthorized(presented: str | None) -> ApiError:
    """The 401: no token, or one this server does not accept."""
    reason = "missing bearer token" if presented is None else "invalid bearer token"
    reason += ": send Authorization: Bearer <token> (a token given to the server with --token)"
    return ApiError(401, reason, {"WWW-Authenticate": "Bearer"})


def refusal(request: Request, error: ApiError, note: str) -> Any:
    """A 401 or 429 in the form the client reads: the login form (saying `note`) for a browser
    opening a page, the encoding an OTLP client expects on /v1/*, JSON otherwise."""
    if wants_login_form(request):
        asked = request.url.remove_query_params("token")
        back = asked.path + (f"?{asked.query}" if asked.query else "")
        form = login_form(back, error=note, status=error.status)
        if "Retry-After" in error.headers:
            form.headers["Retry-After"] = error.headers["Retry-After"]
        return form
    if request.url.path.startswith("/v1/"):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        return error_response(error, PROTOBUF if ctype == PROTOBUF else JSON)
    response = json_response({"error": error.reason}, error.status)
    response.headers.update(error.headers)
    return response
