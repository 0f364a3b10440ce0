"""The recording model shared by the stores, the API and the pages: fields, JSON values, reads.

A recording is a dict with the fields of the protocol's recording object. Values kept in JSON
columns may be non-finite floats; `jsonable` turns them into the protocol's strings on the way out.
`read_params` reads a stored parameter column in the canonical flat form whatever the row holds
(a database written by an older backend keeps nested values), and never raises: one odd row must
not break a list for everyone.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import ID_PATTERN, flatten_params, valid_id

__all__ = [
    "IDENTITY_FIELDS",
    "ID_PATTERN",
    "JSON_FIELDS",
    "NON_FINITE",
    "TIME_FIELDS",
    "jsonable",
    "non_finite_text",
    "now",
    "read_json",
    "read_params",
    "split_value",
    "valid_id",
]

log = logging.getLogger(__name__)

IDENTITY_FIELDS = ("name", "project_id", "notes", "dataset_id", "model_class", "model_id")
JSON_FIELDS = ("metadata", "hyper_parameters", "summary")
TIME_FIELDS = ("started_at", "ended_at")
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def now() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def read_json(text: str | None, what: str) -> Any:
    """A stored JSON column, or None (logged) when it cannot be decoded."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        log.warning("markov server: stored %s is not readable JSON (%.200s); left out", what, exc)
        return None


def read_params(text: str | None, what: str) -> dict[str, Any]:
    """A stored parameter mapping in the flat form, whatever the row holds; {} if unreadable."""
    value = read_json(text, what)
    if not isinstance(value, dict):
        return {}
    try:
        return dict(flatten_params(value))
    except (ConfigError, RecursionError, ValueError, TypeError):
        pass
    # Nested and flat spellings of one key side by side (written before the flat form), or a
    # value too deep to walk: flatten item by item, later spellings win, unwalkable ones go.
    out: dict[str, Any] = {}
    for key, item in value.items():
        try:
            out.update(flatten_params({str(key): item}))
        except (ConfigError, RecursionError, ValueError, TypeError):
            log.warning("markov server: stored %s[%r] cannot be read; left out", what, key)
    return out


def split_value(value: float | int) -> tuple[float | int | None, str | None]:
    """A point value as (number column, text column): non-finite floats go to the text column."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, non_finite_text(value)
    return value, None


def non_finite_text(value: float) -> str:
    """ "NaN", "Infinity" or "-Infinity" for a non-finite float."""
    return _NON_FINITE_TEXT.get(value, "NaN")


def jsonable(value: Any) -> Any:
    """`value` with every non-finite float replaced by its protocol string, ready for JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else non_finite_text(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
