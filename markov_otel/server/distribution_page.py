"""The run page's recorded arrays and texts: a heatmap per key (steps across, values up, as
TensorBoard's histogram dashboard draws them) and a table of texts by step, drawn on the server
as SVG and HTML, so they need no script.

Each ExponentialHistogram point's buckets are spread over `ROWS` equal value bins between the
key's smallest and largest recorded value (a bucket's count shared among the bins its interval
covers; zeros to the bin of 0), and each step's column is shaded by its share of that column's
largest bin. At most `COLUMNS` steps are drawn, evenly picked, the last one always among them.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

ROWS = 40
COLUMNS = 200
MAX_TEXTS = 200
WIDTH, HEIGHT = 600, 200


def distributions_section(points: list[dict[str, Any]]) -> str:
    """One heatmap per key of the recording's distribution points (the API's shape)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for point in sorted(points, key=lambda p: (p["step"], p["time_unix_nano"])):
        by_key.setdefault(str(point["key"]), []).append(point)
    if not by_key:
        return ""
    figures = "".join(_heatmap(key, pts) for key, pts in sorted(by_key.items()))
    return f'<section id="distributions"><h2>Distributions</h2>{figures}</section>'


def texts_section(rows: list[dict[str, Any]]) -> str:
    """The recorded texts, a table by step (the last MAX_TEXTS)."""
    if not rows:
        return ""
    shown = rows[-MAX_TEXTS:]
    body = "".join(
        f"<tr><td>{escape(str(r['key']))}</td><td>{r['step']}</td>"
        f"<td><pre>{escape(str(r['text']))}</pre></td></tr>"
        for r in shown
    )
    more = (
        f'<p class="muted">The last {len(shown)} of {len(rows)}.</p>'
        if len(rows) > len(shown)
        else ""
    )
    return (
        f'<section id="texts"><h2>Texts</h2>{more}<table class="texts">'
        f"<tr><th>key</th><th>step</th><th>text</th></tr>{body}</table></section>"
    )


def _heatmap(key: str, points: list[dict[str, Any]]) -> str:
    if len(points) > COLUMNS:
        picks = sorted({round(i * (len(points) - 1) / (COLUMNS - 1)) for i in range(COLUMNS)})
        points = [points[i] for i in picks]
    lows = [p["min"] for p in points if isinstance(p.get("min"), (int, float))]
    highs = [p["max"] for p in points if isinstance(p.get("max"), (int, float))]
    if not lows:
        return f"<figure><figcaption>{escape(key)}: no finite values</figcaption></figure>"
    low, high = min(lows), max(highs)
    span = (high - low) or 1.0
    cell_w, cell_h = WIDTH / len(points), HEIGHT / ROWS
    rects = []
    for column, point in enumerate(points):
        bins = _bins(point, low, span)
        top = max(bins) or 1
        for row, n in enumerate(bins):
            if n:
                y = HEIGHT - (row + 1) * cell_h
                rects.append(
                    f'<rect x="{column * cell_w:.1f}" y="{y:.1f}" width="{cell_w + 0.5:.1f}" '
                    f'height="{cell_h + 0.5:.1f}" fill-opacity="{0.1 + 0.9 * n / top:.2f}"/>'
                )
    caption = (
        f"{escape(key)}: steps {points[0]['step']} to {points[-1]['step']}, "
        f"values {low:.4g} to {high:.4g}"
    )
    return (
        f'<figure class="distribution" data-key="{escape(key)}"><figcaption>{caption}'
        f'</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(key)} over steps"><g fill="#1f77b4">'
        f"{''.join(rects)}</g></svg></figure>"
    )


def _bins(point: dict[str, Any], low: float, span: float) -> list[float]:
    """A point's counts over ROWS equal value bins from `low` to `low + span`: each bucket's
    count spread over the bins its interval covers, in proportion (zeros to the bin of 0)."""
    bins = [0.0] * ROWS
    base = 2.0 ** (2.0 ** -int(point.get("scale") or 0))
    width = span / ROWS

    def spread(a: float, b: float, n: int) -> None:
        a, b = max(a, low), min(b, low + span)  # min and max bound the finite values
        if not (math.isfinite(a) and math.isfinite(b)) or b < a:
            return
        first, last = int((a - low) / width), int((b - low) / width)
        for row in range(max(0, first), min(ROWS - 1, last) + 1):
            lo, hi = low + row * width, low + (row + 1) * width
            share = (min(b, hi) - max(a, lo)) / (b - a) if b > a else 1.0
            bins[row] += n * max(0.0, share)

    for sign, side in ((1.0, point.get("positive") or {}), (-1.0, point.get("negative") or {})):
        offset = int(side.get("offset") or 0)
        for i, n in enumerate(side.get("bucket_counts") or ()):
            if n:
                try:
                    edges = sorted((sign * base ** (offset + i), sign * base ** (offset + i + 1)))
                except OverflowError:
                    continue
                spread(edges[0], edges[1], int(n))
    if point.get("zero_count"):
        spread(0.0, 0.0, int(point["zero_count"]))
    return bins
