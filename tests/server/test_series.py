"""GET /api/v1/series: downsampled in the database, spikes kept, non-finite as strings, scoped."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id

T0 = 1_700_000_000_000_000_000


def post_points(backend: Backend, rid: str, points: list[Any], **resource: Any) -> None:
    """Store `points` = [(key, step, value, ns)] through POST /v1/metrics, in 20k-point bodies."""
    headers = {**backend.headers, "Content-Type": "application/json"}
    for start in range(0, max(1, len(points)), 20_000):
        body = metrics_json_bytes(rid, points[start : start + 20_000], **resource)
        answer = httpx.post(backend.url + "/v1/metrics", content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text


def get_series(backend: Backend, ids: list[str], key: str, **params: Any) -> httpx.Response:
    query = {"ids": ",".join(ids), "key": key, **params}
    return httpx.get(backend.url + "/api/v1/series", params=query, headers=backend.headers)


@pytest.mark.slow
def test_a_spike_in_100k_points_survives_max_points_100(server: Backend) -> None:
    """One spike among 100,000 points is in the answer of max_points=100, with its exact step."""
    rid = new_id()
    rng = random.Random(1)
    points = [("loss", s, 1.0 + rng.random() * 0.01, T0 + s) for s in range(100_000)]
    points[61_803] = ("loss", 61_803, 250.0, T0 + 61_803)
    points[7_777] = ("loss", 7_777, -40.0, T0 + 7_777)
    post_points(server, rid, points, **{"markov.recording.name": "spiky"})
    answer = get_series(server, [rid], "loss", max_points=100)
    assert answer.status_code == 200
    (one,) = answer.json()["series"]
    assert one["recording_id"] == rid and one["name"] == "spiky"
    assert 50 <= len(one["points"]) <= 100
    assert [61_803, 250.0, T0 + 61_803] in one["points"]
    assert [7_777, -40.0, T0 + 7_777] in one["points"]
    steps = [p[0] for p in one["points"]]
    assert steps == sorted(steps)
    assert one["last"] == [99_999, points[-1][2], T0 + 99_999]
    assert one["bucket_steps"] >= 1000


def test_each_output_bucket_holds_exactly_its_min_and_max(server: Backend) -> None:
    """Against a plain Python reference: per bucket of `bucket_steps`, the values are {min, max}."""
    rid = new_id()
    rng = random.Random(2)
    values = {s: rng.gauss(0, 1) * (10 if rng.random() < 0.001 else 1) for s in range(0, 60_000, 3)}
    post_points(server, rid, [("x", s, v, T0 + s) for s, v in values.items()])
    lo, hi = 1_234, 54_321  # ragged edges: read from points, the middle from buckets
    answer = get_series(server, [rid], "x", max_points=200, min_step=lo, max_step=hi).json()
    (one,) = answer["series"]
    width = one["bucket_steps"]
    base = lo - lo % width
    expected: dict[int, set[float]] = {}
    for s, v in values.items():
        if lo <= s <= hi:
            bucket = expected.setdefault((s - base) // width, set())
            bucket.add(v)
    got: dict[int, set[float]] = {}
    for step, value, ns in one["points"]:
        assert lo <= step <= hi and values[step] == value and ns == T0 + step
        got.setdefault((step - base) // width, set()).add(value)
    assert len(one["points"]) <= 200
    assert got == {b: {min(vs), max(vs)} for b, vs in expected.items()}


def test_buckets_hold_each_min_and_max_whatever_order_the_steps_arrive_in(
    server: Backend,
) -> None:
    """Batches whose steps go back and forth (a resent range, a merged log): the buckets folded
    at ingest still hold exactly each bucket's min and max, as a plain reference finds them."""
    rid = new_id()
    rng = random.Random(3)
    values = {s: rng.gauss(0, 1) for s in range(0, 30_000, 2)}
    shuffled = [("x", s, v, T0 + s) for s, v in values.items()]
    rng.shuffle(shuffled)
    post_points(server, rid, shuffled)
    (one,) = get_series(server, [rid], "x", max_points=100).json()["series"]
    width = one["bucket_steps"]
    expected: dict[int, set[float]] = {}
    for s, v in values.items():
        expected.setdefault(s // width, set()).add(v)
    got: dict[int, set[float]] = {}
    for step, value, _ns in one["points"]:
        got.setdefault(step // width, set()).add(value)
    assert width > 16 and got == {b: {min(vs), max(vs)} for b, vs in expected.items()}


@pytest.mark.slow
def test_buckets_merged_across_bodies_keep_each_min_and_max(server: Backend) -> None:
    """Shuffled points in 40 bodies of 500: each body's buckets are merged into the stored ones
    by the database (not within one batch), and each output bucket still holds exactly its
    min and max. Mutant: the SQL merge keeping the larger minimum (or the smaller maximum)."""
    rid = new_id()
    rng = random.Random(4)
    values = {s: rng.gauss(0, 1) for s in range(20_000)}
    shuffled = [("x", s, v, T0 + s) for s, v in values.items()]
    rng.shuffle(shuffled)
    headers = {**server.headers, "Content-Type": "application/json"}
    for start in range(0, len(shuffled), 500):
        body = metrics_json_bytes(rid, shuffled[start : start + 500])
        answer = httpx.post(server.url + "/v1/metrics", content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
    (one,) = get_series(server, [rid], "x", max_points=100).json()["series"]
    width = one["bucket_steps"]
    expected: dict[int, set[float]] = {}
    for s, v in values.items():
        expected.setdefault(s // width, set()).add(v)
    got: dict[int, set[float]] = {}
    for step, value, _ns in one["points"]:
        got.setdefault(step // width, set()).add(value)
    assert width > 16 and got == {b: {min(vs), max(vs)} for b, vs in expected.items()}


def test_non_finite_values_come_back_as_the_protocol_strings(server: Backend) -> None:
    """NaN, +inf and -inf are kept (one per bucket) as "NaN", "Infinity", "-Infinity"."""
    rid = new_id()
    points: list[Any] = [("v", s, float(s), T0 + s) for s in range(30_000)]
    for step, value in ((100, math.nan), (15_000, math.inf), (29_000, -math.inf)):
        points[step] = ("v", step, value, T0 + step)
    post_points(server, rid, points)
    (one,) = get_series(server, [rid], "v", max_points=30).json()["series"]
    assert len(one["points"]) <= 30
    odd = [p for p in one["points"] if isinstance(p[1], str)]
    assert odd == [[100, "NaN", T0 + 100], [15_000, "Infinity", T0 + 15_000],
                   [29_000, "-Infinity", T0 + 29_000]]  # fmt: skip


def test_a_short_series_comes_back_whole_and_since_step_returns_only_newer(
    server: Backend,
) -> None:
    """Fewer points than max_points: every one, in order; since_step=S: only steps after S."""
    rid = new_id()
    post_points(server, rid, [("acc", s, s / 10, T0 + s) for s in range(300)])
    (whole,) = get_series(server, [rid], "acc").json()["series"]
    assert whole["points"] == [[s, s / 10, T0 + s] for s in range(300)]
    post_points(server, rid, [("acc", s, s / 10, T0 + s) for s in range(300, 310)])
    (tail,) = get_series(server, [rid], "acc", since_step=299).json()["series"]
    assert tail["points"] == [[s, s / 10, T0 + s] for s in range(300, 310)]
    (none,) = get_series(server, [rid], "acc", since_step=309).json()["series"]
    assert none["points"] == [] and none["last"] == [309, 30.9, T0 + 309]


def test_several_ids_answer_in_the_order_asked_and_a_missing_key_is_empty(
    server: Backend,
) -> None:
    """Each id gets an entry in request order; a run without the key has no points."""
    a, b = new_id(), new_id()
    post_points(server, a, [("loss", s, 1.0, T0 + s) for s in range(5)])
    post_points(server, b, [("other", s, 1.0, T0 + s) for s in range(5)])
    doc = get_series(server, [b, a], "loss").json()
    assert [s["recording_id"] for s in doc["series"]] == [b, a]
    assert doc["series"][0]["points"] == [] and doc["series"][0]["last"] is None
    assert len(doc["series"][1]["points"]) == 5


def test_project_token_sees_another_projects_run_exactly_like_a_missing_one(
    tmp_path: Path,
) -> None:
    """A token scoped to project A gets the same 404 for B's run as for an id that never was."""
    backend = Backend(tmp_path / "scoped", extra_args=["--token", "team-a:A"])
    try:
        mine, theirs, never = new_id(), new_id(), new_id()
        post_points(backend, mine, [("loss", 0, 1.0, T0)], **{"markov.project.id": "A"})
        post_points(backend, theirs, [("loss", 0, 1.0, T0)], **{"markov.project.id": "B"})
        scoped = {"Authorization": "Bearer team-a"}
        url = backend.url + "/api/v1/series"

        def ask(*ids: str) -> httpx.Response:
            return httpx.get(url, params={"ids": ",".join(ids), "key": "loss"}, headers=scoped)

        assert ask(mine).status_code == 200
        hidden, missing = ask(mine, theirs), ask(mine, never)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == {"error": f"no recording {theirs!r}"}
        assert missing.json() == {"error": f"no recording {never!r}"}
    finally:
        backend.stop()


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"key": "loss"}, "ids is required"),
        ({"ids": "a", "key": ""}, "key is required"),
        ({"ids": "../x", "key": "loss"}, "is not valid"),
        ({"ids": "a", "key": "loss", "max_points": "5"}, "max_points=5 must be between"),
        ({"ids": "a", "key": "loss", "since_step": "x"}, "since_step='x' must be an integer"),
        ({"ids": ",".join(f"r{i}" for i in range(101)), "key": "loss"}, "at most 100"),
    ],
)
def test_bad_queries_are_400_naming_the_parameter(
    backend: Backend, query: dict[str, str], needle: str
) -> None:
    """Each bad parameter is refused with a 400 whose reason names it."""
    answer = httpx.get(backend.url + "/api/v1/series", params=query, headers=backend.headers)
    assert answer.status_code == 400
    assert needle in answer.json()["error"]


@pytest.mark.slow
def test_a_series_stored_before_buckets_existed_reads_the_same(backend: Backend) -> None:
    """A database from before point_buckets (rows removed for real) is bucketed on first read."""
    rid = new_id()
    rng = random.Random(3)
    post_points(backend, rid, [("y", s, rng.random(), T0 + s) for s in range(50_000)])
    before = get_series(backend, [rid], "y", max_points=100).json()
    db = backend.db.removeprefix("sqlite:///")
    series = "(SELECT series_id FROM series WHERE recording_id = ?)"
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM point_buckets WHERE series_id = {series}", [rid])
        unready = conn.execute("UPDATE series SET buckets_ready = 0 WHERE recording_id = ?", [rid])
        assert unready.rowcount == 1
    backend.restart()  # as an older database meets a new server (which keeps no answers)
    assert get_series(backend, [rid], "y", max_points=100).json() == before
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute(
            f"SELECT count(*) FROM point_buckets WHERE series_id = {series}", [rid]
        ).fetchone()
    assert rows > 50_000 // 16
