"""The run page's files: a table of its artifacts and, per image key, a strip of its images with
a step slider; and the images of several runs that the compare page shows side by side.

Server-rendered HTML (no inline script: the pages' Content-Security-Policy allows none); the
slider is drawn by static/images.js from the JSON embedded beside the strips (`image_index`).
Every link is the API download route, which the page's sign-in cookie opens (GET only).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from markov_otel.server.page_data import embed_json
from markov_otel.server.storage import Store

STRIP_MAX = 50
"""Images shown per key (the latest steps): a run logging an image per step stays readable."""


IMAGES_A_KEY = 1000
"""Images a key offers the slider per run (the latest steps): a bound on the embedded JSON."""


def artifacts_section(store: Store, recording_id: str) -> str:
    """The "Artifacts" and "Images" sections of a run page ('' when it has no files)."""
    found = store.artifacts(recording_id)
    files = [a for a in found if a.get("kind") != "image"]
    images = [a for a in found if a.get("kind") == "image"]
    return _files(recording_id, files) + _images(recording_id, images)


def image_index(artifacts: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[Any]]]:
    """Per image key, per recording, its images in step order ({step, src, caption, digest}),
    from each recording's artifacts (`Store.artifacts`)."""
    index: dict[str, dict[str, list[Any]]] = {}
    for rid, found in artifacts.items():
        for key, shown in _by_key([a for a in found if a.get("kind") == "image"]):
            index.setdefault(key, {})[rid] = [
                {
                    "step": a.get("step", 0),
                    "src": _href(rid, a["name"]),
                    "caption": str((a.get("metadata") or {}).get("caption") or ""),
                    "digest": a.get("digest", ""),
                }
                for a in shown[-IMAGES_A_KEY:]
            ]
    return index


def _by_key(images: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Images grouped by key (a name is `key/step.png`), each group in step order."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        by_key.setdefault(image["name"].rsplit("/", 1)[0], []).append(image)
    return [(k, sorted(v, key=lambda a: a.get("step", 0))) for k, v in sorted(by_key.items())]


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
    strips = []
    for key, shown in _by_key(images):
        figures = "".join(
            f'<figure data-step="{a.get("step", 0)}"><img src="'
            f'{escape(_href(recording_id, a["name"]))}" alt="{escape(key)}" loading="lazy">'
            f"<figcaption>step {a.get('step', '')} "
            f"{escape(str((a.get('metadata') or {}).get('caption', '')))}</figcaption></figure>"
            for a in shown[-STRIP_MAX:]
        )
        # images.js puts the slider and the image at its step in the viewer
        strips.append(
            f'<h3>{escape(key)}</h3><div class="image-viewer" data-key="{escape(key)}"></div>'
            f'<div class="image-strip" data-key="{escape(key)}">{figures}</div>'
        )
    data = embed_json({"images": image_index({recording_id: images})})
    return (
        f'<section id="images"><h2>Images</h2>{"".join(strips)}'
        f'<script type="application/json" id="images-data">{data}</script></section>'
    )
