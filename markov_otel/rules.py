"""What a recording may hold: one set of rules that the recorder and the backend both apply.

The recorder applies them at the call (`add_record`, `add_hyper_parameters`, the constructor), so
a value the backend could not store raises a ConfigError naming it there, in the training code,
and never becomes a spool line that a backend refuses. The backend applies the same functions to
what arrives; a ConfigError there is a 400 with the same message. Change a limit here and both
ends move together.

- ids (recording, writer): `ID_PATTERN`, matched whole, no `..`;
- keys and names (record keys, parameter keys, name, project/dataset/model ids): a str of 1 to
  `MAX_NAME_BYTES` UTF-8 bytes, with no NUL and no lone surrogate; text (notes, text values):
  the same up to `MAX_TEXT_BYTES`;
- steps: int64; times (`timeUnixNano`): 0 to int64 max (OTLP's uint64, kept signed);
- parameters (hyper_parameters, metadata, summary): a mapping nested at most `MAX_DEPTH` deep
  and at most `MAX_PARAMS_BYTES` as JSON;
- bodies: the backend takes `DEFAULT_MAX_BODY_BYTES`; the recorder cuts batches at
  `DEFAULT_MAX_BATCH_BYTES`, well under it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from markov_otel.errors import ConfigError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
STEP_MIN, STEP_MAX = INT64_MIN, INT64_MAX
"""A step travels as the OTLP int64 attribute markov.step; outside this range no reader takes it."""
TIME_MAX = INT64_MAX
"""timeUnixNano is a uint64 in OTLP, but databases keep signed 64-bit integers."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Recording ids: safe as a directory name and in a URL path. Matched whole (no final newline)."""
_ID = re.compile(ID_PATTERN[1:-1])

MAX_NAME_BYTES = 1024
"""Keys and names; PostgreSQL indexes (recording_id, key, …), whose entries must stay < 2.7 kB."""
MAX_TEXT_BYTES = 1 << 20
MAX_PARAMS_BYTES = 1 << 20
MAX_DEPTH = 16
DEFAULT_MAX_BODY_BYTES = 32 << 20
"""The backend's body limit unless `mkv serve --max-body-bytes` says otherwise."""
DEFAULT_MAX_BATCH_BYTES = 4 << 20
"""The recorder's bound on one spool line (one POST body): well under the body limit."""
MAX_IDEMPOTENCY_KEY = 512
ARTIFACT_PART_BYTES = 8 << 20
"""One part of a chunked artifact upload (the last may be shorter): what a cut upload redoes."""
DEFAULT_MAX_ARTIFACT_BYTES = 64 << 30
"""The backend's limit on one artifact unless `mkv serve --max-artifact-bytes` says otherwise."""
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
"""How files are named on the wire: their SHA-256, lower-case hex."""

STATUSES = frozenset(
    {"created", "registered", "running", "finished", "failed", "terminated", "interrupted",
     "crashed", "pruned"}
)  # fmt: skip
TERMINAL_STATUSES = frozenset(
    {"finished", "failed", "terminated", "interrupted", "crashed", "pruned"}  # pruned: Optuna's
)

Leaf = str | int | float | bool | None


def valid_id(value: object) -> TypeGuard[str]:
    """True when `value` is a valid recording id (see `ID_PATTERN`)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


def check_id(value: object, what: str = "recording id") -> str:
    """The id itself if valid, else a ConfigError naming it."""
    if not valid_id(value):
        raise ConfigError(
            f"{what} {_short(value)} is not valid: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (as printed by `mkv runs`)"
        )
    return value


def text_problem(value: object, limit: int = MAX_NAME_BYTES) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if "\x00" in value:
        return "contains a NUL character, which databases cannot store"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "contains a lone surrogate (e.g. '\\udc80'), which is not valid UTF-8"
    if size > limit:
        return f"is {size} bytes long; the limit is {limit} bytes of UTF-8"
    return None


def check_text(what: str, value: object, limit: int = MAX_NAME_BYTES) -> str:
    """`value` if it can be stored as text, else a ConfigError that says what and why."""
    problem = text_problem(value, limit)
    if problem is not None:
        raise ConfigError(f"{what} {_short(value)} {problem}")
    assert isinstance(value, str)
    return value


def check_key(key: object, what: str = "record key") -> str:
    """A record or parameter key: a non-empty storable name."""
    if key == "":
        raise ConfigError(f"{what} '' must be a non-empty string, e.g. 'loss'")
    return check_text(what, key)


def check_step(step: Any) -> int:
    """An explicit step as a plain int in the int64 range, else a ConfigError."""
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise ConfigError(f"step={step!r} must be an integer, e.g. add_record(record, step=10)")
    value = int(step.__index__())
    if not STEP_MIN <= value <= STEP_MAX:
        raise ConfigError(
            f"step={step!r} is outside the int64 range [-2**63, 2**63-1] that OTLP carries, "
            "e.g. add_record(record, step=10)"
        )
    return value


def check_time(time_unix_nano: int) -> int:
    """A point time in nanoseconds since the epoch that a database can keep."""
    if not 0 <= time_unix_nano <= TIME_MAX:
        raise ConfigError(
            f"timeUnixNano={time_unix_nano} is outside 0..2**63-1 nanoseconds since the epoch"
        )
    return time_unix_nano


def check_params(what: str, values: object, converted: list[str] | None = None) -> dict[str, Any]:
    """A copy of a parameter mapping in storable form, or a ConfigError naming the bad part.

    Leaves are kept when they are None, bool, int, float or storable text; lists and tuples are
    lists, numpy arrays and tensors their `tolist()`, sets sorted lists; datetime, date and time
    ISO 8601 text; an Enum its value; a path its text; Decimal, Fraction and other numbers
    (`__index__`, `.item()`, `__float__`) the number; an int past int64 the double (said in
    `converted`, when given). bytes, and a conversion that raises, are a ConfigError naming the
    key. Any other object becomes `str(obj)` now, so the recorded value is fixed at the call.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{what}={_short(values)} must be a dict, e.g. {what}={{'lr': 0.001}}")
    copy = _copy_mapping(what, values, 1, converted if converted is not None else [])
    size = len(json.dumps(copy, default=str))
    if size > MAX_PARAMS_BYTES:
        raise ConfigError(
            f"{what} is {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}. Keep large "
            "values (datasets, configs) in files and record their path"
        )
    return copy


def _copy_mapping(
    what: str, values: Mapping[Any, Any], depth: int, converted: list[str]
) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it")
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{what}[{key!r}]" if isinstance(key, str) else what
        out[check_key(key, f"{what} key")] = _copy_value(name, value, depth, converted)
    return out


def _copy_value(what: str, value: Any, depth: int, converted: list[str]) -> Any:
    if value is None or type(value) in (bool, float):
        return value
    if type(value) is int:
        return _int64(what, value, converted)
    if isinstance(value, enum.Enum):
        return _copy_value(what, value.value, depth, converted)
    if isinstance(value, (bool, int, float)):  # subclasses: numpy.float64
        return _copy_value(what, _plain(value), depth, converted)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(
            f"{what} is {type(value).__name__}, which is not text; decode it (e.g. "
            "value.decode()) or record its length or a hash"
        )
    if isinstance(value, str):
        return check_text(what, value, MAX_TEXT_BYTES)
    if isinstance(value, Mapping):
        return _copy_mapping(what, value, depth + 1, converted)
    if isinstance(value, (list, tuple, set, frozenset)) or _is_array(value):
        if depth + 1 > MAX_DEPTH:
            raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it")
        items = _converted(what, value.tolist) if _is_array(value) else value
        if not isinstance(items, list | tuple | set | frozenset):  # a 0-d array: its item
            return _copy_value(what, items, depth, converted)
        copied = [_copy_value(what, item, depth + 1, converted) for item in items]
        return _sorted(copied) if isinstance(value, (set, frozenset)) else copied
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return _copy_value(what, os.fspath(value), depth, converted)
    return _copy_value(what, _number_or_text(what, value), depth, converted)


def _number_or_text(what: str, value: Any) -> Any:
    """An object that says it is a number (`__index__`, numpy/torch `.item()`, `__float__`:
    Decimal, Fraction) as that number, else its str(); a conversion that raises names `what`."""
    if hasattr(value, "__index__"):  # numpy integers
        return _converted(what, value.__index__)
    if hasattr(value, "dtype") and callable(getattr(value, "item", None)):
        return _converted(what, value.item)  # numpy and torch scalars
    if hasattr(value, "__float__"):
        return _converted(what, value.__float__)
    return _converted(what, value.__str__)


_CALLS = {"__index__": "int", "__float__": "float", "__str__": "str"}


def _converted(what: str, convert: Any) -> Any:
    try:
        return convert()
    except Exception as exc:
        raise ConfigError(
            f"{what}: {_CALLS.get(convert.__name__, convert.__name__)}() of the value raised "
            f"{exc!r}; pass a number, a string, or a dict/list of those"
        ) from None


def _is_array(value: Any) -> bool:
    """A numpy array or a torch tensor (anything with a shape, a dtype and `tolist()`)."""
    return (
        hasattr(value, "dtype")
        and hasattr(value, "shape")
        and callable(getattr(value, "tolist", None))
    )


def _int64(what: str, value: int, converted: list[str]) -> int | float:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    converted.append(
        f"{what}={value} is past the int64 range that OTLP and databases carry; it is kept "
        f"as the double {float(value)!r}"
    )
    return float(value)


def _sorted(items: list[Any]) -> list[Any]:
    """A set's members in order; members of mixed types by type name, then repr."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda v: (type(v).__name__, repr(v)))


def _plain(value: bool | int | float) -> bool | int | float:
    """A subclass of a plain number (IntEnum, numpy.float64) as the plain number."""
    if isinstance(value, bool):
        return bool(value)
    return int(value) if isinstance(value, int) else float(value)


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The canonical, flat form of a parameter mapping: nested keys joined with '.'.

    `{"opt": {"name": "sgd"}}` becomes `{"opt.name": "sgd"}`, as resource attributes carry it.
    Lists (of anything JSON holds) and an empty dict stay as they are, as recording.json has them.
    Two spellings of one flat key (`{"a.b": 1, "a": {"b": 2}}`) are a ConfigError.
    """
    out: dict[str, Any] = {}
    _flatten_into(values, prefix, out)
    return out


def _flatten_into(values: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten_into(value, name + ".", out)
            continue
        if name in out:
            raise ConfigError(f"parameter {name!r} is given twice (once through a nested dict)")
        out[name] = _flat_leaf(value)


def _flat_leaf(value: Any) -> Any:
    if isinstance(value, Mapping):  # an empty dict stays one: the same value everywhere
        return {}
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def next_status(current: str | None, incoming: str, *, explicit: bool) -> str:
    """The status after `incoming` arrives: a batch (`explicit=False`) never moves a finished
    recording back to running; only an explicit change (PATCH, a resume) may. A failed
    recording stays failed when another end arrives (the rank that finished after another rank
    failed, the ranks torchrun terminates after a failure): only a resume (running) leaves it."""
    if current == "failed" and incoming in TERMINAL_STATUSES:
        return current
    if current in TERMINAL_STATUSES and incoming not in TERMINAL_STATUSES and not explicit:
        return current
    return incoming


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
