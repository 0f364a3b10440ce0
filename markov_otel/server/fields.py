"""What a request may set on a recording, checked with `markov_otel.rules` before it is stored.

Three sources set recording fields: the registration body, the PATCH body and the `markov.*`
resource attributes of an OTLP batch. Each goes through the same checks (ids, names and text,
parameter depth and size, steps, times) and comes out in the canonical stored form: parameter
mappings flat (`{"opt.name": "sgd"}`, `rules.flatten_params`), times ISO 8601 UTC. A value the
rules refuse raises ConfigError, which the app answers with a 400 carrying its message.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import (
    MAX_NAME_BYTES,
    MAX_TEXT_BYTES,
    check_id,
    check_key,
    check_params,
    check_step,
    check_text,
    check_time,
    flatten_params,
)
from markov_otel.server.marks import check_tags
from markov_otel.server.records import IDENTITY_FIELDS, JSON_FIELDS, NON_FINITE, TIME_FIELDS

__all__ = [
    "RESOURCE_TIMES",
    "canonical_params",
    "iso_time",
    "patch_fields",
    "registration_fields",
    "resource_fields",
    "text",
]

_TEXT_LIMITS = {"notes": MAX_TEXT_BYTES}
_RESOURCE_FIELDS = {
    "markov.recording.name": "name",
    "markov.project.id": "project_id",
    "markov.notes": "notes",
    "markov.dataset.id": "dataset_id",
    "markov.model.class": "model_class",
    "markov.model.id": "model_id",
    "markov.status": "status",
}
RESOURCE_TIMES = {
    "markov.recording.started_at": "started_at",
    "markov.recording.ended_at": "ended_at",
}
_RESOURCE_MAPS = {
    "markov.metadata.": "metadata",
    "markov.hparam.": "hyper_parameters",
    "markov.summary.": "summary",
}


def text(name: str, value: object) -> str:
    """A text field: None is "", anything else must pass the rules for its size class."""
    if value is None:
        return ""
    return check_text(name, value, _TEXT_LIMITS.get(name, MAX_NAME_BYTES))


def canonical_params(name: str, value: object) -> dict[str, Any]:
    """A parameter mapping checked (depth, size, keys, text) and flattened: the stored form."""
    return dict(flatten_params(check_params(name, value)))


def iso_time(name: str, value: object) -> str:
    """An ISO 8601 time with a zone, as UTC in `created_at`'s form (so it sorts as text)."""
    if not isinstance(value, str) or len(value) > 64:
        raise ConfigError(f"{name}={value!r:.80} must be an ISO 8601 string, e.g. {_EXAMPLE!r}")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00", 1))
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an ISO 8601 time, e.g. {_EXAMPLE!r}") from None
    if when.tzinfo is None:
        raise ConfigError(f"{name}={value!r} has no time zone; add 'Z' for UTC, e.g. {_EXAMPLE!r}")
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


_EXAMPLE = "2025-05-01T05:09:00Z"


def registration_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The checked fields of a POST /api/v1/recordings body."""
    fields: dict[str, Any] = {"recording_id": check_id(body.get("recording_id"))}
    for name in IDENTITY_FIELDS:
        fields[name] = text(name, body.get(name))
    for name in ("metadata", "hyper_parameters"):
        fields[name] = canonical_params(name, body.get(name))
    _times(body, fields)
    fields["model_id"] = fields["model_id"] or "model-" + uuid.uuid4().hex[:16]
    return fields


def patch_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The checked changes of a PATCH body (fields that are absent or null change nothing)."""
    changes: dict[str, Any] = {}
    for name in JSON_FIELDS:
        if body.get(name) is not None:
            changes[name] = canonical_params(name, body[name])
    for name in ("status", "notes", "name"):
        if body.get(name) is not None:
            changes[name] = text(name, body[name])
    if body.get("tags") is not None:
        changes["tags"] = check_tags(body["tags"])
    if body.get("archived") is not None:
        if not isinstance(body["archived"], bool):
            raise ConfigError("archived must be true or false")
        changes["archived"] = body["archived"]
    if body.get("requirements") is not None:  # environment.json keeps its own structure
        changes["requirements"] = check_params("requirements", body["requirements"])
    _times(body, changes)
    alerts = body.get("alerts")
    if alerts is not None:
        if not isinstance(alerts, list):
            kind = type(alerts).__name__
            raise ConfigError(f"alerts must be a list of alert objects, not {kind}")
        changes["alerts"] = [alert_fields(alert) for alert in alerts]
    return changes


def _times(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    for name in TIME_FIELDS:
        if body.get(name) is not None:
            out[name] = iso_time(name, body[name])


_ALERT_TEXT = ("metric_name", "operation", "text")
_ALERT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "threshold": lambda v: _number("alert threshold", v),
    "value": lambda v: _number("alert value", v),
    "step": check_step,
    "time_unix_nano": lambda v: check_time(_integer("alert time_unix_nano", v)),
}


def alert_fields(alert: object) -> dict[str, Any]:
    """One alert of a PATCH: an object with a string alert_id and well-typed known fields."""
    if not isinstance(alert, dict) or not isinstance(alert.get("alert_id"), str):
        raise ConfigError("each alert must be an object with a string alert_id, e.g. 'a1'")
    checked = check_params("alert", alert)
    check_key(alert["alert_id"], "alert_id")
    for name in _ALERT_TEXT:
        if name in alert:
            check_text(f"alert {name}", alert[name])
    for name, check in _ALERT_CHECKS.items():
        if name in alert:
            check(alert[name])
    return checked


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r:.40} must be an integer")
    return value


def _number(name: str, value: Any) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok and not (isinstance(value, str) and value in NON_FINITE):
        raise ConfigError(
            f"{name}={value!r:.40} must be a number, 'NaN', 'Infinity' or '-Infinity'"
        )
    return value


def resource_fields(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The recording fields a resource's `markov.*` attributes carry (only those present)."""
    fields: dict[str, Any] = {}
    maps: dict[str, dict[str, Any]] = {}
    for attr, value in attrs.items():
        if not attr.startswith("markov."):
            continue
        if attr in _RESOURCE_FIELDS:
            name = _RESOURCE_FIELDS[attr]
            fields[name] = check_text(
                attr, "" if value is None else str(value), _TEXT_LIMITS.get(name, MAX_NAME_BYTES)
            )
        elif attr in RESOURCE_TIMES:
            fields[RESOURCE_TIMES[attr]] = iso_time(attr, value)
        else:
            for prefix, name in _RESOURCE_MAPS.items():
                if attr.startswith(prefix):
                    maps.setdefault(name, {})[attr[len(prefix) :]] = value
    for name, values in maps.items():
        prefix = next(p for p, n in _RESOURCE_MAPS.items() if n == name)
        fields[name] = canonical_params(f"resource attributes {prefix}*", values)
    return fields
