"""Server-side line charts: downsample a series (min/max per bucket) and draw it as inline SVG.

Drawing on the server keeps the page free of any chart library or CDN, and min/max buckets keep
spikes visible when thousands of points are folded into a few hundred pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape

__all__ = ["MAX_POINTS", "downsample", "svg_chart"]

MAX_POINTS = 1200
WIDTH, HEIGHT, PAD = 640, 220, 40


def downsample(
    points: Sequence[tuple[int, float]], limit: int = MAX_POINTS
) -> list[tuple[int, float]]:
    """At most ~`limit` points: for each bucket of consecutive points, its min and its max."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 2))
    out: list[tuple[int, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        low = min(range(len(bucket)), key=lambda i: bucket[i][1])
        high = max(range(len(bucket)), key=lambda i: bucket[i][1])
        out.extend(bucket[i] for i in sorted({low, high}))
    return out


def svg_chart(key: str, points: Sequence[tuple[int, float]], skipped: int) -> str:
    """One chart (a <figure> with an <svg> line, axis labels and its data for the hover readout)."""
    caption = f"{escape(key)} <small>{len(points)} points shown"
    caption += f", {skipped} non-finite not drawn</small>" if skipped else "</small>"
    if not points:
        head = f'<figure class="chart" data-key="{escape(key)}">'
        return f"{head}<figcaption>{caption}</figcaption></figure>"
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x0, x1, y0, y1 = min(steps), max(steps), min(values), max(values)
    xs = (WIDTH - 2 * PAD) / ((x1 - x0) or 1)
    ys = (HEIGHT - 2 * PAD) / ((y1 - y0) or 1)
    coords = " ".join(
        f"{PAD + (s - x0) * xs:.1f},{HEIGHT - PAD - (v - y0) * ys:.1f}" for s, v in points
    )
    data = escape(json.dumps([[s, v] for s, v in points], separators=(",", ":")))
    return f"""<figure class="chart" data-key="{escape(key)}">
<figcaption>{caption}</figcaption>
<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(key)} by step"
 data-points="{data}" data-x0="{x0}" data-x1="{x1}" data-y0="{y0!r}" data-y1="{y1!r}">
<rect class="plot" x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}"/>
<polyline class="series" points="{coords}"/>
<text x="{PAD}" y="{HEIGHT - 10}">{x0}</text>
<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" text-anchor="end">step {x1}</text>
<text x="4" y="{PAD}">{_fmt(y1)}</text>
<text x="4" y="{HEIGHT - PAD}">{_fmt(y0)}</text>
<circle class="cursor" r="4" cx="-10" cy="-10"/>
</svg>
<output class="readout"></output>
</figure>"""


def _fmt(value: float) -> str:
    return f"{value:.4g}"
