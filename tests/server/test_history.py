"""GET /api/v1/history: packed arrays that decode to exactly what was stored, the cache of a
server process dropped when the recording changes, and 4xx for bad queries."""

from __future__ import annotations

import base64
import itertools
import math
import sqlite3
import struct
from array import array
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from markov_otel.server.auth import OPEN
from markov_otel.server.history import BINARY, PackCache, json_document, read_history
from markov_otel.server.storage import SeriesPoints, open_store


def unpack(packed: bytes) -> list[tuple[int, float, int]]:
    """The points of one key, packed: n steps, n values, n times, little-endian."""
    n = len(packed) // 24
    steps, values, times = (struct.unpack(f"<{n}{c}", packed[i * 8 * n : (i + 1) * 8 * n])
                            for i, c in enumerate("qdq"))  # fmt: skip
    return list(zip(steps, values, times, strict=True))


def loss(runs: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """The packed records of key "loss" of the only run."""
    ((_, keys),) = runs
    return keys["loss"]


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
    first = loss(read_history(store, OPEN, ["run-1"], None, None, cache))
    got = unpack(first)
    assert [s for s, _, _ in got] == steps and [t for _, _, t in got] == [10 + s for s in steps]
    for (_, value, _), want in zip(got, values, strict=True):
        assert (math.isnan(value) and math.isnan(want)) or value == want
    again = loss(read_history(store, OPEN, ["run-1"], ["loss"], None, cache))
    assert again is first
    more = SeriesPoints.of("run-1", "loss", [6, 7, 8], [1.0, 2.0, 3.0], [16, 17, 18])
    store.ingest(None, [], [more])
    after = loss(read_history(store, OPEN, ["run-1"], None, None, cache))
    assert len(unpack(after)) == len(values) + 3
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


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [-0.0, 0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
)
INT64 = st.integers(0, 2**63 - 1)
# Points of one key: (step, value, time); a (step, time) at most once, so their order is defined.
POINTS = st.lists(
    st.tuples(st.one_of(INT64, st.integers(0, 3)), FLOATS | st.integers(-(2**53), 2**53), INT64),
    min_size=1,
    max_size=40,
    unique_by=lambda p: (p[0], p[2]),
)


def same_value(got: float, want: float) -> bool:
    """Equal to the bit (the sign of zero too); any NaN equals NaN (the store keeps none's
    payload)."""
    if math.isnan(want):
        return math.isnan(got)
    return struct.pack("<d", got) == struct.pack("<d", float(want))


def test_both_forms_of_history_give_back_exactly_the_stored_points(tmp_path: Any) -> None:
    """Property: for any points of a key (NaN, ±inf, -0.0, subnormals, ints, steps and times up
    to 2**63-1, several points at one step), stored in 1-3 batches in any order, the binary
    answer and the JSON answer decode (as read.history decodes them) to every stored point, by
    step then time, each value to the bit; and the frame holds, at each step, the value with the
    latest time there."""
    from starlette.testclient import TestClient

    from markov_otel import read
    from markov_otel.server import create_app

    db = f"sqlite:///{tmp_path / 'h.db'}"
    client = TestClient(create_app(db=db, tokens=["t"]))
    store = open_store(db)
    runs = itertools.count()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(points=POINTS, cuts=st.lists(st.integers(1, 39), max_size=2))
    def check(points: list[tuple[int, float, int]], cuts: list[int]) -> None:
        rid = f"run-{next(runs)}"
        bounds = [0, *sorted(c for c in cuts if c < len(points)), len(points)]
        for lo, hi in itertools.pairwise(bounds):
            if lo == hi:
                continue
            steps, values, times = (list(c) for c in zip(*points[lo:hi], strict=True))
            batch = SeriesPoints.of(rid, "loss", steps, values, times)
            store.ingest(None, [(rid, {})], [batch])
        want = sorted(points, key=lambda p: (p[0], p[2]))
        for accept in (BINARY, "application/json"):
            answer = client.get(
                f"/api/v1/history?ids={rid}",
                headers={"Authorization": "Bearer t", "Accept": accept},
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith(accept)
            ((got_id, keys),) = list(read._history_runs(answer))
            step, value, time = keys["loss"]
            assert got_id == rid and len(step) == len(points)
            assert list(step) == [p[0] for p in want] and list(time) == [p[2] for p in want]
            assert all(same_value(g, w) for g, (_, w, _) in zip(value, want, strict=True))
            frame = read._packed_frame(keys, None)
            last = {s: v for s, v, _ in want}  # by time within a step: the latest is put last
            assert list(frame.index) == sorted(last) and len(frame) == len(last)
            assert all(same_value(frame.at[s, "loss"], v) for s, v in last.items())

    try:
        check()
    finally:
        store.close()


def test_json_form_splits_the_records_into_three_base64_columns(tmp_path: Any) -> None:
    """The JSON answer (for clients without the binary reader) holds per key n and base64
    step/value/time arrays that equal the binary records, for 3 points."""
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    store.ingest(
        None, [("r", {})], [SeriesPoints.of("r", "k", [1, 2, 2], [0.5, -0.0, 9], [5, 6, 7])]
    )
    runs = read_history(store, OPEN, ["r"], None, None)
    store.close()
    doc = json_document(runs, None)
    (column,) = [run["keys"]["k"] for run in doc["runs"]]
    assert column["n"] == 3
    decoded = [array(code, base64.b64decode(column[name])) for code, name in
               (("q", "step"), ("d", "value"), ("q", "time"))]  # fmt: skip
    assert list(zip(*decoded, strict=True)) == unpack(runs[0][1]["k"]) == [
        (1, 0.5, 5), (2, -0.0, 6), (2, 9.0, 7)
    ]  # fmt: skip


def test_history_reads_the_blocks_in_step_order_and_the_rows_otherwise(tmp_path: Any) -> None:
    """Two batches in step order are read from their blocks (still whole with the rows gone);
    a batch going back in steps, or a series stored before blocks, is read from its rows, by
    step then time; deleting the recording deletes its blocks."""
    path = tmp_path / "h.db"
    store = open_store(f"sqlite:///{path}")
    for rid, first, second in (("ordered", [1, 2], [3, 4]), ("back", [3, 4], [1, 2])):
        for steps in (first, second):
            batch = SeriesPoints.of(
                rid, "k", steps, [s / 2 for s in steps], [10 * s for s in steps]
            )
            store.ingest(None, [(rid, {})], [batch])
    want = [(s, s / 2, 10 * s) for s in (1, 2, 3, 4)]
    assert unpack(store.packed_points("ordered", "k")) == want
    assert unpack(store.packed_points("back", "k")) == want
    with sqlite3.connect(path) as db:  # the rows of both go; only the ordered one's blocks serve
        db.execute("DELETE FROM points")
    assert unpack(store.packed_points("ordered", "k")) == want
    assert unpack(store.packed_points("back", "k")) == []
    with sqlite3.connect(path) as db:  # as a database of a server before blocks: not ready
        db.execute("UPDATE series SET blocks_ready = 0")
    assert unpack(store.packed_points("ordered", "k")) == []
    assert store.delete("ordered") and store.delete("back")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM point_blocks").fetchone() == (0,)
    store.close()
