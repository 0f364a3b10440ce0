"""The runs' rows the pages embed: flat dotted parameters, start time, duration, safe JSON."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from markov_otel.server.page_data import duration_seconds, embed_json, flat, start_of


def test_flat_joins_nested_names_and_merges_two_spellings() -> None:
    """Nested dicts become a.b; a nested and a dotted spelling of one name merge; NaN a string."""
    assert flat({"opt": {"name": "adam"}, "lr": 0.1}) == {"opt.name": "adam", "lr": 0.1}
    both = {"opt": {"name": "sgd", "m": 0.9}, "opt.name": "adam", "n": math.nan, "xs": [1, 2]}
    assert flat(both) == {"opt.name": "adam", "opt.m": 0.9, "n": "NaN", "xs": "[1, 2]"}


def test_start_prefers_started_at_and_duration_runs_to_ended_at() -> None:
    """started_at beats created_at; duration ends at ended_at, or now while running."""
    run = {"created_at": "2025-01-01T00:00:00+00:00", "updated_at": "2025-01-01T00:10:00+00:00",
           "status": "finished"}  # fmt: skip
    assert start_of(run) == run["created_at"] and duration_seconds(run) == 600
    run |= {"started_at": "2025-01-01T00:01:00+00:00", "ended_at": "2025-01-01T00:03:30+00:00"}
    assert start_of(run) == run["started_at"] and duration_seconds(run) == 150
    live = {"created_at": "2025-01-01T00:00:00+00:00", "updated_at": "x", "status": "running"}
    now = datetime(2025, 1, 1, 1, 0, tzinfo=timezone.utc)
    assert duration_seconds(live, now) == 3600


def test_embedded_json_cannot_close_its_script_tag() -> None:
    """A run name holding </script> stays inside the JSON and parses back unchanged."""
    text = embed_json({"name": "</script><script>alert(1)</script>&"})
    assert "</script>" not in text and "<" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>&"}
