"""Hyperparameters as frameworks hand them over (Namespace, AttributeDict, dataclasses, enums,
tensors, functions) turned into plain values: dicts, lists, str, int, float, bool and None."""

from __future__ import annotations

import dataclasses
import enum
import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import MAX_DEPTH

_PLAIN = (str, bool, int, float)


def plain_params(params: Any) -> dict[str, Any]:
    """A plain dict of `params` (a Mapping, a Namespace or a dataclass instance), nested dicts
    kept; keys become strings; anything that is not a plain value becomes its text."""
    if isinstance(params, Namespace):
        params = vars(params)
    elif _is_dataclass_instance(params):
        params = _fields(params)
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"hyperparameters {params!r} must be a dict, an argparse.Namespace or a dataclass, "
            "e.g. {'lr': 0.001}"
        )
    return _plain_mapping(params, 1)


def _plain_mapping(values: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    return {str(key): _plain(value, depth) for key, value in values.items()}


def _plain(value: Any, depth: int) -> Any:
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth)
    if isinstance(value, _PLAIN):  # subclasses: numpy.float64, IntEnum handled above
        return _exact(value)
    if depth >= MAX_DEPTH:  # deeper than a recording keeps (or a cycle): its text
        return str(value)
    if isinstance(value, Namespace):
        value = vars(value)
    elif _is_dataclass_instance(value):
        value = _fields(value)
    if isinstance(value, Mapping):
        return _plain_mapping(value, depth + 1)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return _scalar(value)


def _exact(value: str | bool | int | float) -> str | bool | int | float:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _scalar(value: Any) -> Any:
    """A numpy / torch scalar as its number; a function or class as its name; else its text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            number = item()
        except (TypeError, ValueError, RuntimeError):  # an array of several values: its text
            return str(value)
        if number is None or type(number) in _PLAIN:
            return number
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}".lstrip(".")
    return str(value)


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields, shallow (dataclasses.asdict deep-copies, which some values refuse)."""
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
