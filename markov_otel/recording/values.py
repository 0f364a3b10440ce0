"""What add_record accepts, and how each value becomes a number.

Recorded as is:
- float, int, bool (bool as 0/1; ints beyond int64 as doubles);
- NaN, ±inf, -0.0 ("NaN", "Infinity", "-Infinity" on the wire).

Converted:
- numpy / torch scalars, 0-d and one-element arrays / tensors, anything with `.item()`:
  the item (numpy ints stay ints); anything else with `__float__` (Decimal, Fraction): `float()`;
- numeric strings ("0.5", " 1e3 ", "nan"): `float()`;
- arrays of more than one element (numpy, torch on any device), lists and tuples of numbers:
  a distribution, one ExponentialHistogram point per key and step; other strings: a text, one
  log record (`arrays.py`: the caller's copy, and what is refused);
- nested dicts: flattened, {"val": {"loss": 1}} records "val/loss"; an empty nested dict records
  nothing.

ConfigError naming the key (a long value is shortened in the message):
- None, bytes, complex, empty arrays and lists, arrays of objects or strings, ragged lists,
  texts past 64 KiB;
- a value whose `.item()` or `__float__` raises (the error is named, not let out);
- two keys that give the same flattened key ({"a/b": 1, "a": {"b": 2}}).

ConfigError: non-string or empty keys, keys the backend could not store (NUL, a lone surrogate,
more than 1024 UTF-8 bytes: `rules.py`), an empty record, a record that is not a mapping.

Keys: any non-empty string (unicode, spaces, '/', quotes) is recorded as is; the OTLP metric
name is the key sanitised to the instrument-name syntax, and the point attribute `markov.key`
keeps the original. `step=`: any integer (numpy ints too) in the int64 range, going back or
repeating kept; a bool, float or string step, or one outside int64, is a ConfigError, and so is
a default step (previous + 1) that would pass 2**63-1.

A record is checked whole before anything is kept, so an error never records half of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.recording import arrays
from markov_otel.rules import check_key

PLAIN_TYPES = frozenset({float, int, bool})


def normalize_record(record: Any) -> dict[str, float | int | bool]:
    """A new dict of plain numbers, or a ConfigError that names the offending key (an array or
    a text too: for those, `split_record`)."""
    numbers, others = split_record(record)
    if others:
        key = next(iter(others))
        raise _unsupported(key, others[key])
    return numbers


def split_record(record: Any) -> tuple[dict[str, float | int | bool], dict[str, Any]]:
    """The record's numbers, and its arrays (copied: arrays.array_copy) and texts by key; or a
    ConfigError that names the offending key."""
    if not isinstance(record, Mapping):
        raise ConfigError(
            f"record={record!r} must be a dict of metric name to number, e.g. {{'loss': 0.9}}"
        )
    out: dict[str, float | int | bool] = {}
    others: dict[str, Any] = {}
    _flatten(record, "", out, others)
    if not out and not others:
        raise ConfigError("record is empty: pass at least one key, e.g. {'loss': 0.9}")
    return out, others


def _flatten(
    record: Mapping[Any, Any], prefix: str, out: dict[str, Any], others: dict[str, Any]
) -> None:
    for key, value in record.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"record key {key!r} must be a non-empty string, e.g. 'loss'")
        name = check_key(prefix + key)  # what the backend could not store is refused now
        if isinstance(value, Mapping):
            _flatten(value, name + "/", out, others)
        elif name in out or name in others:  # {"a/b": 1, "a": {"b": 2}}: one would be lost
            raise ConfigError(
                f"record key {name!r} is given twice (once through a nested dict); "
                "rename one of them"
            )
        elif isinstance(value, str) and _number_text(value) is None:
            others[name] = arrays.text(name, value)
        elif arrays.is_array(value):
            others[name] = arrays.array_copy(name, value)
        else:
            out[name] = to_number(name, value)


def _number_text(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def to_number(key: str, value: Any) -> float | int | bool:
    """One value as a plain number (see the module table), or a ConfigError naming the key."""
    if type(value) in PLAIN_TYPES:
        return value
    if isinstance(value, float):  # subclasses, e.g. numpy.float64
        return float(value)
    if isinstance(value, int):  # subclasses, e.g. IntEnum; bool is a plain type above
        return int(value)
    if isinstance(value, (bytes, bytearray)) or value is None:
        raise _unsupported(key, value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _unsupported(key, value) from None
    item = getattr(value, "item", None)
    if callable(item):  # numpy / torch scalars and one-element arrays / tensors
        try:
            value = item()
        except (ValueError, RuntimeError, TypeError):
            raise _unsupported(key, value) from None
        except Exception as exc:
            raise _raised(key, value, "item", exc) from None
        if type(value) in PLAIN_TYPES:
            return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _unsupported(key, value) from None
    except Exception as exc:  # a __float__ that raises: misuse, named, nothing of it kept
        raise _raised(key, value, "float", exc) from None


def _raised(key: str, value: Any, how: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"record key {key!r}: {how}() of the {type(value).__name__} value raised {exc!r}; "
        f"record a number, e.g. {{{key!r}: 0.9}}"
    )


def _unsupported(key: str, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(
        f"record key {key!r} has value {shown} of type {type(value).__name__}, which is not a "
        "number; record numbers only (text belongs in summary.add() or metadata), e.g. "
        f"{{{key!r}: 0.9}}"
    )


Flattener = Callable[[dict[str, Any]], dict[str, Any] | None]
"""A learnt shape's flattening: the flat dict of plain numbers, or None for the slow path."""


def shape_flattener(record: dict[Any, Any], values: Mapping[str, Any]) -> Flattener | None:
    """A function flattening records shaped like `record` (a dict whose values are numbers or
    dicts of numbers, one level) straight into `values`' names, or None if `values` did not
    come from `record` that plainly (conversions of names, deeper nesting, empty dicts).

    It is generated source, as `dataclasses` and `namedtuple` generate theirs: each number is
    read into a local and its type checked there (`type(x) in PLAIN`), then one dict display with
    constant keys builds the flat record, the fastest flattening CPython has (iterator chains
    cost more than the record; a set built to check the types took ~140 ns more a call). Keys
    enter it only through repr(), so any string is a literal, never code.
    The caller looks it up by the record's outer keys, in order; the function checks the rest
    (each nested value a dict of the same size with the same keys, every value a plain
    number) and returns None for anything else, which then takes the slow path.
    """
    reads: list[str] = []  # lines of the try block
    items: list[str] = []  # the flat record's members
    names: list[str] = []
    for i, (outer, inner) in enumerate(record.items()):
        if type(inner) is not dict:
            reads.append(f"        x{len(items)} = r[{outer!r}]")
            items.append(f"{outer!r}: x{len(items)}")
            names.append(outer)
            continue
        if not inner:
            return None
        reads.append(f"        v{i} = r[{outer!r}]")
        reads.append(f"        if type(v{i}) is not dict or len(v{i}) != {len(inner)}: return None")
        for key in inner:
            reads.append(f"        x{len(items)} = v{i}[{key!r}]")
            items.append(f"{outer + '/' + key!r}: x{len(items)}")
            names.append(f"{outer}/{key}")
    if tuple(values) != tuple(names) or len(names) != len(set(names)):
        return None
    plain = " and ".join(f"type(x{n}) in PLAIN" for n in range(len(items)))
    source = "\n".join([
        "def flatten(r):",
        "    try:",
        *reads,
        "    except KeyError:",
        "        return None",
        f"    return {{{', '.join(items)}}} if {plain} else None",
    ])  # fmt: skip
    namespace: dict[str, Any] = {}
    scope = {"PLAIN": PLAIN_TYPES, "dict": dict, "type": type, "len": len}
    exec(compile(source, "<markov_otel record shape>", "exec"), scope, namespace)
    flatten: Flattener = namespace["flatten"]
    return flatten
