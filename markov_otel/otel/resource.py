"""The experiment as OTel resource attributes (`markov.*`), from the run's recording info.

Every batch carries them, so what rides along is bounded: a value longer than
`MAX_RESOURCE_VALUE` characters, and the largest values past `MAX_RESOURCE_TOTAL` in all, are left
out of batches and named in `markov.resource.omitted`, as are values that are no OTel attribute
value (`attribute_value`: [1, None], lists of dicts, {}). They are sent once instead, in full, with
the registration and the PATCH of the recording (and kept in recording.json). A backend merges
resource attributes into the recording, so an omitted one leaves the full value untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from markov_otel.rules import flatten_params

DEFAULT_SERVICE_NAME = "markov-experiment"
MAX_RESOURCE_VALUE = 1024
MAX_RESOURCE_TOTAL = 16 * 1024
OMITTED = "markov.resource.omitted"

_IDENTITY = {
    "recording_id": "markov.recording.id",
    "name": "markov.recording.name",
    "project_id": "markov.project.id",
    "dataset_id": "markov.dataset.id",
    "model_class": "markov.model.class",
    "model_id": "markov.model.id",
    "notes": "markov.notes",
    "status": "markov.status",
}
_TIMES = {"started_at": "markov.recording.started_at", "ended_at": "markov.recording.ended_at"}
_GROUPS = {
    "metadata": "markov.metadata.",
    "hyper_parameters": "markov.hparam.",
    "summary": "markov.summary.",
}
_PLACE = {
    "rank": "markov.rank",
    "world_size": "markov.world_size",
    "local_rank": "markov.local_rank",
    "host": "host.name",
}
_KEPT = {"service.name", "markov.recording.id", "markov.status"}  # never left out


def service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


def experiment_attributes(info: Mapping[str, Any]) -> dict[str, Any]:
    """`service.name` and the `markov.*` attributes for a recording.json-shaped mapping,
    bounded as the module says."""
    attrs: dict[str, Any] = {"service.name": service_name()}
    for field, attr in _IDENTITY.items():
        value = info.get(field)
        if value is not None and value != "":
            attrs[attr] = str(value)
    for field, attr in _TIMES.items():
        if isinstance(info.get(field), (int, float)):
            attrs[attr] = iso_time(info[field])
    unfit: set[str] = set()  # no OTel attribute value: sent whole with the registration
    for field, prefix in _GROUPS.items():
        for key, value in flatten_params(info.get(field) or {}).items():
            if value is None:
                continue
            if attribute_value(value):
                attrs[prefix + key] = value
            else:
                unfit.add(prefix + key)
    place = info.get("distributed")  # a rank of a distributed job (distributed.py)
    if isinstance(place, Mapping):
        for field, attr in _PLACE.items():
            if place.get(field) is not None:
                attrs[attr] = place[field]
    return _bounded(attrs, unfit)


def attribute_value(value: Any) -> bool:
    """An OTel attribute value: a str, bool, int or float, or a list of one of those kinds
    (OTel's attribute arrays are homogeneous; [1, None], lists of dicts and {} are not)."""
    if not isinstance(value, list):
        return not isinstance(value, dict)
    kinds = {type(v) for v in value}
    return len(kinds) <= 1 and kinds <= {str, bool, int, float}


def iso_time(unix_seconds: float) -> str:
    """ISO 8601 in UTC with microseconds, as the backend writes its times."""
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat(timespec="microseconds")


def _bounded(attrs: dict[str, Any], unfit: set[str]) -> dict[str, Any]:
    sizes = {k: _size(v) for k, v in attrs.items() if k not in _KEPT}
    omitted = {k for k, size in sizes.items() if size > MAX_RESOURCE_VALUE} | unfit
    total = sum(size for k, size in sizes.items() if k not in omitted)
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= MAX_RESOURCE_TOTAL:
            break
        if key not in omitted:
            omitted.add(key)
            total -= sizes[key]
    if not omitted:
        return attrs
    kept = {k: v for k, v in attrs.items() if k not in omitted}
    kept[OMITTED] = sorted(omitted)[:100]
    return kept


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, default=str))


def series_attributes(info: Mapping[str, Any]) -> dict[str, str]:
    """The run-selecting attributes put on every aggregated series (docs/protocol.md)."""
    return {
        "markov.recording.id": str(info.get("recording_id", "")),
        "markov.recording.name": str(info.get("name", "")),
        "markov.project.id": str(info.get("project_id", "")),
    }
