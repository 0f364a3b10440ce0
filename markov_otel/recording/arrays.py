"""Arrays and texts at the call: what add_record does with a value that is no number.

The caller pays a copy and no more: a numpy array is copied, a torch tensor detached and copied
to the CPU once, a list or tuple of numbers made an array; the bucketing into an
ExponentialHistogram runs later on the flusher thread (otel/distributions.py). numpy is
imported only when an array or a list arrives, so it is no dependency of the recorder.
A text (a string that is not a number) is kept as is, up to `MAX_TEXT_BYTES`, and becomes a log
record (otel/texts.py).

ConfigError naming the key, and nothing of that record kept: an empty array, an array of
objects, strings or complex numbers, a ragged list, a list holding anything but numbers, and a
text longer than `MAX_TEXT_BYTES`.
"""

from __future__ import annotations

from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import text_problem

MAX_TEXT_BYTES = 64 * 1024
"""A recorded text's bound in UTF-8 bytes; longer texts belong in a file (an artifact)."""

_NUMERIC_KINDS = frozenset("biuf")  # numpy dtype kinds: bool, int, unsigned, float


def is_array(value: Any) -> bool:
    """A list or tuple, or a numpy array / torch tensor of more than one element (one element
    is a number: values.to_number takes its item)."""
    if isinstance(value, (list, tuple)):
        return True
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "dtype"):
        return False
    size = 1
    for n in shape:
        size *= int(n)
    return size != 1


def array_copy(key: str, value: Any) -> Any:
    """The caller's one copy of an array, as a numpy array of numbers, or a ConfigError."""
    import numpy as np

    if _is_tensor(value):
        if value.is_complex():
            raise _refused(key, value, f"its elements are {value.dtype} (real numbers only)")
        copy = _tensor_copy(value)
    elif isinstance(value, np.ndarray):
        copy = np.array(value, copy=True)
    else:
        try:
            copy = np.array(value)
        except ValueError as exc:  # ragged: "inhomogeneous shape"
            raise _refused(key, value, f"it is not rectangular ({exc})") from None
    if copy.dtype.kind not in _NUMERIC_KINDS:
        raise _refused(key, value, f"its elements are {copy.dtype} (numbers only)")
    if copy.size == 0:
        raise _refused(key, value, "it is empty")
    return copy


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _tensor_copy(value: Any) -> Any:
    """Detached and copied to the CPU once; half precisions widened (numpy has no bfloat16)."""
    import torch

    tensor = value.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.to(device="cpu", dtype=torch.float32)  # a copy on any device
    elif tensor.device.type != "cpu":
        tensor = tensor.cpu()
    else:
        tensor = tensor.clone()
    return tensor.numpy()


def text(key: str, value: str) -> str:
    """A text value as kept (a str subclass as a str), or a ConfigError naming the key."""
    problem = text_problem(value, MAX_TEXT_BYTES)
    if problem is not None:
        raise ConfigError(
            f"record key {key!r} has a text that {problem}; write longer texts to a file and "
            "record its path"
        )
    return str(value)


def _refused(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(
        f"record key {key!r} has a {type(value).__name__} that cannot be recorded as a "
        f"distribution: {why}; pass a non-empty array or list of numbers, e.g. "
        f"{{{key!r}: [0.1, 0.5]}}"
    )
