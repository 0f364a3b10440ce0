"""ExperimentSummary: single-valued keys that summarise a run (final losses, accuracy, epochs)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import INT64_MAX, INT64_MIN, MAX_TEXT_BYTES, check_key, check_text

SummaryValue = float | int | str | bool


class ExperimentSummary:
    """Single-valued keys of an experiment, sent as `markov.summary.<key>` resource attributes.

    The named methods take numbers or numeric strings (``add_training_loss("0.23")``);
    ``add(key, value)`` stores any other key, and also accepts plain text.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._values: dict[str, SummaryValue] = {}
        self._lock = threading.Lock()
        self._on_change = on_change

    def add_training_loss(self, value: float | str) -> None:
        self._put("training_loss", _number("training_loss", value))

    def add_validation_loss(self, value: float | str) -> None:
        self._put("validation_loss", _number("validation_loss", value))

    def add_training_accuracy(self, value: float | str) -> None:
        self._put("training_accuracy", _number("training_accuracy", value))

    def add_validation_accuracy(self, value: float | str) -> None:
        self._put("validation_accuracy", _number("validation_accuracy", value))

    def add_number_of_epochs(self, value: int | str) -> None:
        number = _number("number_of_epochs", value)
        if not float(number).is_integer() or number < 0:
            raise ConfigError(f"number_of_epochs={value!r} must be a non-negative whole number")
        self._put("number_of_epochs", int(number))

    def add(self, key: str, value: SummaryValue) -> None:
        """Any other single-valued key: numbers (numeric strings become numbers) or text."""
        if not isinstance(key, str) or not key:
            raise ConfigError(f"summary key {key!r} must be a non-empty string")
        check_key(key, "summary key")
        if isinstance(value, str):
            # plain text is a fine summary value too, e.g. the best checkpoint's name
            value = _number_or_text(key, check_text(f"summary {key!r}", value, MAX_TEXT_BYTES))
        elif not isinstance(value, (float, bool)):
            value = _number(key, value)
        self._put(key, value)

    def get(self, key: str) -> SummaryValue | None:
        return self._values.get(key)

    def to_dict(self) -> dict[str, SummaryValue]:
        with self._lock:
            return dict(self._values)

    def update(self, values: dict[str, Any]) -> None:
        """Take several keys at once (used when resuming a recording)."""
        for key, value in values.items():
            self.add(key, value)

    def __repr__(self) -> str:
        return f"ExperimentSummary({self.to_dict()!r})"

    def _put(self, key: str, value: SummaryValue) -> None:
        with self._lock:
            self._values[key] = value
        if self._on_change is not None:
            self._on_change()


def _number_or_text(key: str, value: str) -> SummaryValue:
    try:
        return _number(key, value)
    except ConfigError:
        return value


def _number(key: str, value: Any) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(f"summary {key}={value!r} must be a number, not a bool")
    if isinstance(value, int):
        return int(value) if INT64_MIN <= value <= INT64_MAX else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"summary {key}={value!r} is not a number; pass e.g. 0.23 or '0.23', "
            f"or use summary.add({key!r}, text) for text"
        ) from None
    except Exception as exc:  # a __float__ that raises: misuse, named here, nothing kept
        raise ConfigError(
            f"summary {key!r}: float() of the {type(value).__name__} value raised {exc!r}; "
            f"pass a number, e.g. summary.add({key!r}, 0.23)"
        ) from None
    if (
        isinstance(value, str)
        and math.isfinite(number)
        and number.is_integer()
        and "." not in value
    ):
        return int(number)
    return number
