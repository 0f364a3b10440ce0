"""The reference Markov backend: OTLP/HTTP ingest, the REST API of protocol.md, experiment pages.

`create_app(db=..., tokens=[...])` builds the ASGI app; `serve(...)` runs it on uvicorn (what
`mkv serve` and `python -m markov_otel.server` call, through options.py). It never imports the
recorder. The names load on first use (PEP 562), so `markov_otel.server.options` (the command
line) imports without the [server] extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markov_otel.server.app import DEFAULT_MAX_BODY_BYTES, create_app
    from markov_otel.server.runner import serve

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]

_WHERE = {
    "DEFAULT_MAX_BODY_BYTES": "markov_otel.server.app",
    "create_app": "markov_otel.server.app",
    "serve": "markov_otel.server.runner",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'markov_otel.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
