"""The reference Markov backend: OTLP/HTTP ingest, the REST API of protocol.md, experiment pages.

`create_app(db=..., tokens=[...])` builds the ASGI app; `serve(...)` runs it on uvicorn (what
`mkv serve` and `python -m markov_otel.server` call). It never imports the recorder.
"""

from __future__ import annotations

from markov_otel.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from markov_otel.server.runner import serve

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]
