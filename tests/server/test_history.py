"""GET /api/v1/history: packed arrays that decode to exactly what was stored, the cache of a
server process dropped when the recording changes, and 4xx for bad queries."""

from __future__ import annotations

import base64
import math
from array import array
from typing import Any

from markov_otel.server.auth import OPEN
from markov_otel.server.history import PackCache, read_history
from markov_otel.server.storage import SeriesPoints, open_store


def unpack(packed: dict[str, Any]) -> list[tuple[int, float, int]]:
    columns = [array(code) for code in ("q", "d", "q")]
    for column, name in zip(columns, ("step", "value", "time"), strict=True):
        column.frombytes(base64.b64decode(packed[name]))
    return list(zip(*columns, strict=True))


def test_history_packs_every_point_and_the_cache_follows_new_points(tmp_path: Any) -> None:
    """Every stored point, NaN and infinities included, comes back from the packed arrays in
    step order; a second read comes from the cache (same object), and a new batch of the
    recording is read from the database again (3 points more)."""
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    values = [0.5, math.nan, math.inf, -math.inf, 1e-300, 7]
    steps = list(range(len(values)))
    batch = SeriesPoints.of("run-1", "loss", steps, values, [10 + s for s in steps])
    store.ingest(None, [("run-1", {})], [batch])
    cache = PackCache()
    first = read_history(store, OPEN, ["run-1"], None, None, cache)["runs"][0]["keys"]["loss"]
    got = unpack(first)
    assert [s for s, _, _ in got] == steps and [t for _, _, t in got] == [10 + s for s in steps]
    for (_, value, _), want in zip(got, values, strict=True):
        assert (math.isnan(value) and math.isnan(want)) or value == want
    again = read_history(store, OPEN, ["run-1"], ["loss"], None, cache)["runs"][0]["keys"]["loss"]
    assert again is first
    more = SeriesPoints.of("run-1", "loss", [6, 7, 8], [1.0, 2.0, 3.0], [16, 17, 18])
    store.ingest(None, [], [more])
    after = read_history(store, OPEN, ["run-1"], None, None, cache)["runs"][0]["keys"]["loss"]
    assert after["n"] == len(values) + 3 and len(unpack(after)) == 9
    store.close()


def test_history_rejects_bad_queries(tmp_path: Any) -> None:
    """No ids, a bad max_points, an unknown recording: 400/400/404 with the reason."""
    from starlette.testclient import TestClient

    from markov_otel.server import create_app

    client = TestClient(create_app(db=f"sqlite:///{tmp_path / 'h.db'}", tokens=["t"]))
    auth = {"Authorization": "Bearer t"}
    for query, status, said in (
        ("", 400, "ids is required"),
        ("?ids=a&max_points=x", 400, "must be an integer"),
        ("?ids=a&max_points=5", 400, "between"),
        ("?ids=nobody", 404, "no recording"),
    ):
        answer = client.get("/api/v1/history" + query, headers=auth)
        assert answer.status_code == status and said in answer.text, (query, answer.text)
