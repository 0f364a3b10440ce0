"""ExperimentRecorder's arguments: ModelClass, the queue config and the extras, checked before
any I/O so that misuse raises at once with the value and the fix."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from markov_otel.config import EXPLICIT, Settings
from markov_otel.errors import ConfigError
from markov_otel.extras import serve_step
from markov_otel.rules import DEFAULT_MAX_BATCH_BYTES
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")
_LOCAL_NOTE = SayOnce(log)  # once per process: a sweep of 300 runs needs the hint once

_QUEUE_CONFIG: dict[str, tuple[type, float | int]] = {
    "batch_size": (int, 1000),
    "batch_processing_interval": (float, 1.0),
    "register_batch_timeout": (float, 10.0),
    "sync_data_timeout": (float, 30.0),
    "max_batch_bytes": (int, DEFAULT_MAX_BATCH_BYTES),
}
_SETTING_EXTRAS = ("system_metrics", "system_metrics_interval", "ranks")
"""Extras that are also settings (config keys): given here, they win over env and config file."""
_EXTRAS = {
    "recording_id", "markov_dir", "endpoint", "api_key", "webhook_url", "settings",
    *_SETTING_EXTRAS,
}  # fmt: skip


class ModelClass(str, enum.Enum):
    """The kind of task the experiment's model solves."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    CLUSTERING = "clustering"
    OBJECT_DETECTION = "object_detection"
    SEGMENTATION = "segmentation"
    TEXT_GENERATION = "text_generation"
    RANKING = "ranking"
    FORECASTING = "forecasting"
    REINFORCEMENT_LEARNING = "reinforcement_learning"
    OTHER = "other"


def model_class_value(value: Any) -> str:
    try:
        return ModelClass(value).value
    except ValueError:
        kinds = ", ".join(m.name for m in ModelClass)
        raise ConfigError(f"model_class={value!r} is not one of ModelClass.{{{kinds}}}") from None


def queue_config(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(_QUEUE_CONFIG) - _EXTRAS
    if unknown:
        known = ", ".join(sorted({*_QUEUE_CONFIG, *_EXTRAS}))
        raise ConfigError(
            f"unknown argument(s) {sorted(unknown)}; known keyword arguments: {known}"
        )
    out: dict[str, Any] = {}
    for key, (kind, default) in _QUEUE_CONFIG.items():
        value = kwargs.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok:
            raise ConfigError(
                f"{key}={value!r} must be a positive {'integer' if kind is int else 'number'}, "
                f"e.g. ExperimentRecorder(..., {key}={default!r})"
            )
        out[key] = kind(value)
    return out


def recorder_settings(mode: Any, kwargs: Mapping[str, Any]) -> Settings:
    given = kwargs.get("settings")
    extras = {k: kwargs[k] for k in _SETTING_EXTRAS if kwargs.get(k) is not None}
    if given is not None:
        if not isinstance(given, Settings):
            raise ConfigError(f"settings={given!r} must be a markov_otel.config.Settings")
        if mode is not None:
            extras["mode"] = mode
        sources = {**given.sources, **dict.fromkeys(extras, EXPLICIT)}
        return replace(given._with(extras), sources=sources)
    overrides = {
        **extras,
        "mode": mode,
        "dir": kwargs.get("markov_dir"),
        "endpoint": kwargs.get("endpoint"),
        "api_key": kwargs.get("api_key"),
        "webhook_url": kwargs.get("webhook_url"),
    }
    return Settings.resolve(overrides)


def note_recording_locally(settings: Settings, recording_id: str, run_dir: Path) -> None:
    """Say once, in one line, that runs stay local because no backend is configured anywhere,
    and how to go online and upload them later."""
    if not settings.offline_by_default:
        return
    _LOCAL_NOTE.say(
        "local", logging.WARNING,
        "markov_otel: no backend configured, so recording %s is kept locally in %s. To go "
        "online: %s with `--token T` (or your team's backend), `mkv config set endpoint URL` "
        "and `mkv config set api_key T`; then "
        "`mkv sync %s` uploads this run (`mkv mode offline` silences this note)",
        recording_id, run_dir, serve_step(), recording_id,
    )  # fmt: skip
