"""The run page's files: a table of its artifacts and, per image key, a strip of its images.

Server-rendered HTML (no script: the pages' Content-Security-Policy allows none inline); every
link is the API download route, which the page's sign-in cookie opens (GET only).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from markov_otel.server.storage import Store

STRIP_MAX = 50
"""Images shown per key (the latest steps): a run logging an image per step stays readable."""


def artifacts_section(store: Store, recording_id: str) -> str:
    """The "Artifacts" and "Images" sections of a run page ('' when it has no files)."""
    found = store.artifacts(recording_id)
    files = [a for a in found if a.get("kind") != "image"]
    images = [a for a in found if a.get("kind") == "image"]
    return _files(recording_id, files) + _images(recording_id, images)


def _href(recording_id: str, name: str) -> str:
    return f"/api/v1/recordings/{recording_id}/artifacts/{quote(name)}"


def _files(recording_id: str, files: list[dict[str, Any]]) -> str:
    if not files:
        return ""
    head = "<tr><th>name</th><th>kind</th><th>size</th><th>digest</th><th></th></tr>"
    rows = "".join(
        f"<tr><td>{escape(a['name'])}</td><td>{escape(a['kind'])}</td>"
        f"<td>{int(a['size']):,}</td><td><code>{escape(a['digest'][:19])}…</code></td>"
        f'<td><a href="{escape(_href(recording_id, a["name"]))}" download>download</a></td></tr>'
        for a in files
    )
    return f'<section><h2>Artifacts</h2><table class="artifacts">{head}{rows}</table></section>'


def _images(recording_id: str, images: list[dict[str, Any]]) -> str:
    if not images:
        return ""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        by_key.setdefault(image["name"].rsplit("/", 1)[0], []).append(image)
    strips = []
    for key, shown in sorted(by_key.items()):
        shown = sorted(shown, key=lambda a: a.get("step", 0))[-STRIP_MAX:]
        figures = "".join(
            f'<figure><img src="{escape(_href(recording_id, a["name"]))}" alt="{escape(key)}" '
            f'loading="lazy" style="width:128px;image-rendering:pixelated">'
            f"<figcaption>step {a.get('step', '')} "
            f"{escape(str((a.get('metadata') or {}).get('caption', '')))}</figcaption></figure>"
            for a in shown
        )
        strips.append(
            f'<h3>{escape(key)}</h3><div class="image-strip" style="display:flex;gap:8px;'
            f'overflow-x:auto">{figures}</div>'
        )
    return f"<section><h2>Images</h2>{''.join(strips)}</section>"
