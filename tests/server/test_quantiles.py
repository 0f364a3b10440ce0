"""Quantiles of a stored distribution point, estimated from its buckets (server/quantiles.py),
against numpy's quantiles of the array that was bucketed: within the bucket resolution."""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np
import pytest
from backend_fixture import Backend
from otlp_bodies import new_id
from test_page import T0, post_points

from markov_otel.otel.distributions import bucket
from markov_otel.server.quantiles import QUANTILES, quantiles


def stored(values: Any) -> dict[str, Any]:
    """The array as the backend stores it: the recorder's bucketing, in the API's shape."""
    h = bucket(np.asarray(values, dtype=np.float64))
    side = {
        name: {"offset": offset, "bucket_counts": counts}
        for name, (offset, counts) in (("positive", h.positive), ("negative", h.negative))
    }
    return {"count": h.count, "zero_count": h.zero_count, "scale": h.scale, "min": h.min,
            "max": h.max, **side}  # fmt: skip


def bucket_of(value: float, scale: int) -> tuple[float, float]:
    """The interval of the bucket holding `value` at `scale` ((0, 0): the zero bucket)."""
    if value == 0:
        return 0.0, 0.0
    index = math.ceil(math.log2(abs(value)) * 2**scale) - 1
    low, high = 2 ** (index / 2**scale), 2 ** ((index + 1) / 2**scale)
    return (low, high) if value > 0 else (-high, -low)


def within_buckets(values: Any, point: dict[str, Any], qs: Any = QUANTILES) -> list[float]:
    """Assert each estimate interpolates, as numpy does, between the buckets of the elements
    on either side of its rank: within [(1-f)·lowA + f·lowB, (1-f)·highA + f·highB] for the
    rank's fraction f; the estimates."""
    got = quantiles(point, qs)
    assert got is not None
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    for q, estimate in zip(qs, got, strict=True):
        rank = q * (len(ordered) - 1)
        f = rank - math.floor(rank)
        below = bucket_of(float(ordered[math.floor(rank)]), point["scale"])
        above = bucket_of(float(ordered[math.ceil(rank)]), point["scale"])
        low, high = ((1 - f) * b + f * a for b, a in zip(below, above, strict=True))
        expected = float(np.quantile(ordered, q))
        slack = 1e-12 * max(1.0, abs(expected))
        assert low - slack <= estimate <= high + slack, (q, estimate, expected, low, high)
        assert low - slack <= expected <= high + slack
    return got


def test_a_rank_between_two_far_elements_is_interpolated_as_numpy_does() -> None:
    """Five powers of two at a fine scale: a rank halfway between 2 and 4 is about 3 (numpy's
    linear interpolation), not 2 (the lower element) nor 4."""
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    point = stored(values)
    got = within_buckets(values, point, (0.125, 0.375, 0.625, 0.875))
    assert got == pytest.approx([1.5, 3.0, 6.0, 12.0], rel=0.05)


def test_quantiles_of_negatives_zeros_and_positives_are_numpys_within_a_bucket() -> None:
    """A normal sample with a tenth of exact zeros: every quantile of QUANTILES (and 0, 1) lies
    in the buckets around numpy's, negative, zero and positive ranks alike."""
    rng = np.random.default_rng(7)
    values = rng.normal(0.2, 1.5, 5000)
    values[::10] = 0.0
    point = stored(values)
    assert point["negative"]["bucket_counts"] and point["zero_count"] == 500
    qs = (0.0, 0.05, 0.25, 0.45, 0.5, 0.75, 0.95, 1.0)
    got = within_buckets(values, point, qs)
    assert got[0] == pytest.approx(values.min()) and got[-1] == pytest.approx(values.max())
    assert got[0] < 0 < got[-1]
    assert sorted(got) == got


def test_a_rank_in_the_zero_bucket_is_zero() -> None:
    """Half zeros: the median (and the quartiles inside the zeros) are exactly 0."""
    values = np.concatenate([np.zeros(600), np.linspace(-3, -1, 200), np.linspace(1, 5, 200)])
    point = stored(values)
    got = within_buckets(values, point, (0.25, 0.5, 0.75))
    assert got == [0.0, 0.0, 0.0]


def test_only_negative_values_spanning_decades() -> None:
    """Negative values from -1000 to -0.001 (a coarse scale): numpy's within a bucket."""
    values = -np.geomspace(1e-3, 1e3, 3001)
    point = stored(values)
    assert not point["positive"]["bucket_counts"] and point["scale"] < 5
    within_buckets(values, point)


def test_one_value_and_no_values() -> None:
    """One element: every quantile is it; a point without finite elements has none."""
    assert quantiles(stored([2.5])) == [2.5] * len(QUANTILES)
    empty = {"count": 0, "zero_count": 0, "scale": 0, "positive": {}, "negative": {}}
    assert quantiles(empty) is None


def test_the_quantiles_route_names_what_is_missing_or_bad(backend: Backend) -> None:
    """No key, no ids, a bad id, a NUL in the key: 400s naming the parameter; an unknown
    recording: 404; a recording without that key: no steps."""
    rid = new_id()
    post_points(backend, rid, [("loss", 0, 1.0, T0)])

    def ask(params: dict[str, str]) -> httpx.Response:
        url = backend.url + "/api/v1/quantiles"
        return httpx.get(url, params=params, headers=backend.headers, timeout=30)

    cases = [({"ids": rid}, 400, "key"), ({"key": "w"}, 400, "ids"),
             ({"ids": "../x", "key": "w"}, 400, "ids"), ({"ids": rid, "key": "a\x00"}, 400, "key"),
             ({"ids": "0" * 32, "key": "w"}, 404, "0" * 32)]  # fmt: skip
    for params, status, named in cases:
        answer = ask(params)
        assert (answer.status_code, named in answer.text) == (status, True), answer.text
    answer = ask({"ids": rid, "key": "w"})
    assert answer.json()["series"] == [{"recording_id": rid, "name": "", "steps": [], "values": []}]


@pytest.mark.parametrize("scale", [10**30, 20, -10, -(10**30)])
def test_a_stored_point_of_any_scale_gives_numbers_not_an_exception(scale: int) -> None:
    """Scales past what a float can hold and non-finite min/max (what ingest lets through)
    give five floats (NaN where no estimate exists), never an OverflowError."""
    point = {"scale": scale, "zero_count": 1, "min": "NaN", "max": "Infinity",
             "positive": {"offset": 5, "bucket_counts": [1, 2]},
             "negative": {"offset": -3, "bucket_counts": [4]}}  # fmt: skip
    got = quantiles(point)
    assert got is not None and len(got) == len(QUANTILES)
    assert all(isinstance(v, float) for v in got)
