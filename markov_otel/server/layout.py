"""The HTML frame every page shares: head, stylesheet, scripts, header bar."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

__all__ = ["layout"]


def layout(
    title: str, body: str, status: int = 200, *, scripts: Sequence[str] = ()
) -> HTMLResponse:
    """A page titled `title` around `body`; `scripts` are names under /static/ (loaded deferred)."""
    tags = "".join(f'<script src="/static/{escape(s)}" defer></script>' for s in scripts)
    return HTMLResponse(
        status_code=status,
        headers={"Cache-Control": "no-store"},
        content=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · markov</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">
<link rel="stylesheet" href="/static/page.css">
{tags}
</head><body><header><a href="/">markov recordings</a></header><main>
{body}
</main></body></html>""",
    )
