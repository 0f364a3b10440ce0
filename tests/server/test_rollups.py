"""The read plan of rollups.py: it covers the asked range exactly and keeps to the bucket budget."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from markov_otel.server.rollups import LEVELS, bucket_points, plan

steps = st.integers(min_value=-(10**12), max_value=10**12)


@given(steps, st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=5000))
def test_plan_covers_the_range_once_within_the_budget(lo: int, span: int, buckets: int) -> None:
    """Raw ranges plus whole buckets tile [lo, hi] without overlap; outputs <= buckets + 1."""
    hi = lo + span
    how = plan(lo, hi, buckets)
    pieces = list(how.raw)
    if how.level is not None:
        assert how.width % how.level == 0
        pieces.append((how.first * how.level, (how.last + 1) * how.level - 1))
    pieces.sort()
    assert pieces[0][0] == lo and pieces[-1][1] == hi
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(pieces))
    assert how.base <= lo and how.base % how.width == 0
    assert (hi - how.base) // how.width + 1 <= buckets + 1


def test_bucket_points_keeps_extremes_and_first_non_finite_at_every_level() -> None:
    """Each level's bucket holds the min, the max, the first non-finite point and the count."""
    rows = [(7, s, float(s % 7), None, s) for s in range(70_000)]
    rows[100] = (7, 100, None, "NaN", 100)
    rows[5] = (7, 5, None, "Infinity", 5)
    found = bucket_points(rows)
    for width in LEVELS:
        first = found[7, width, 0]
        span = min(width, 70_000)
        assert first[9] == span
        assert first[6:9] == [5, "Infinity", 5]
        assert (first[0], first[1]) == (0, 0.0)
        assert first[4] == 6.0 and first[3] == 6
    assert found[7, 16, 6][6:9] == [100, "NaN", 100]
    assert len([k for k in found if k[1] == 16]) == -(-70_000 // 16)
