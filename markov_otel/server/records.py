"""The recording model shared by the stores, the API and the pages: fields, merges, JSON values.

A recording is a dict with the fields of the protocol's recording object. Values kept in JSON
columns may be non-finite floats; `jsonable` turns them into the protocol's strings on the way out.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from markov_otel.rules import ID_PATTERN, valid_id

__all__ = [
    "IDENTITY_FIELDS",
    "ID_PATTERN",
    "JSON_FIELDS",
    "from_resource",
    "jsonable",
    "now",
    "split_value",
    "valid_id",
]


IDENTITY_FIELDS = ("name", "project_id", "notes", "dataset_id", "model_class", "model_id")
JSON_FIELDS = ("metadata", "hyper_parameters", "summary")

_RESOURCE_FIELDS = {
    "markov.recording.name": "name",
    "markov.project.id": "project_id",
    "markov.notes": "notes",
    "markov.dataset.id": "dataset_id",
    "markov.model.class": "model_class",
    "markov.model.id": "model_id",
    "markov.status": "status",
}
_RESOURCE_MAPS = {
    "markov.metadata.": "metadata",
    "markov.hparam.": "hyper_parameters",
    "markov.summary.": "summary",
}
_NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def now() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def from_resource(attrs: dict[str, Any]) -> dict[str, Any]:
    """The recording fields named by a resource's `markov.*` attributes (only those present)."""
    fields: dict[str, Any] = {}
    for attr, value in attrs.items():
        if not attr.startswith("markov."):
            continue
        if attr in _RESOURCE_FIELDS:
            fields[_RESOURCE_FIELDS[attr]] = "" if value is None else str(value)
            continue
        for prefix, name in _RESOURCE_MAPS.items():
            if attr.startswith(prefix):
                fields.setdefault(name, {})[attr[len(prefix) :]] = value
    return fields


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
