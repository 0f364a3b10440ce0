"""The OpenAPI document: served without a token and naming every API route the app has."""

from __future__ import annotations

from pathlib import Path

import httpx
from backend_fixture import Backend
from starlette.routing import Route

from markov_otel.server import create_app


def test_openapi_lists_every_api_route_and_method(backend: Backend, tmp_path: Path) -> None:
    """/openapi.json (public) documents exactly the app's /api and /v1 routes and methods."""
    answer = httpx.get(backend.url + "/openapi.json")
    assert answer.status_code == 200
    documented = {
        (path, method.upper()) for path, ops in answer.json()["paths"].items() for method in ops
    }
    app = create_app(db=str(tmp_path / "x.db"), tokens=[])
    served = {
        (route.path.replace(":path}", "}"), method)  # {name:path}: a name may hold "/"
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith(("/api/", "/v1/"))
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert documented == served
