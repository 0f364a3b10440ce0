"""The experiment as OTel resource attributes (`markov.*`), from the run's recording info."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

DEFAULT_SERVICE_NAME = "markov-experiment"

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
_GROUPS = {
    "metadata": "markov.metadata.",
    "hyper_parameters": "markov.hparam.",
    "summary": "markov.summary.",
}


def service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


def experiment_attributes(info: Mapping[str, Any]) -> dict[str, Any]:
    """`service.name` and the `markov.*` attributes for a recording.json-shaped mapping."""
    attrs: dict[str, Any] = {"service.name": service_name()}
    for field, attr in _IDENTITY.items():
        value = info.get(field)
        if value is not None and value != "":
            attrs[attr] = str(value)
    for field, prefix in _GROUPS.items():
        _flatten(info.get(field) or {}, prefix, attrs)
    return attrs


def _flatten(values: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}.", out)
        elif value is not None:
            out[f"{prefix}{key}"] = (
                value if isinstance(value, (str, bool, int, float)) else str(value)
            )


def series_attributes(info: Mapping[str, Any]) -> dict[str, str]:
    """The run-selecting attributes put on every aggregated series (docs/protocol.md)."""
    return {
        "markov.recording.id": str(info.get("recording_id", "")),
        "markov.recording.name": str(info.get("name", "")),
        "markov.project.id": str(info.get("project_id", "")),
    }
