"""Default steps: previous + 1, taken atomically by threads recording at once.

A step is one next() of a C iterator (`itertools.count`, or near the end a `range` chained with
the last step), which is one C call under the GIL: two threads never take the same step. An
explicit `step=` restarts the count after it (`Steps`, a part of the recorder); past 2**63-1,
which OTLP's int64 cannot carry, the next default step is a ConfigError.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from markov_otel.errors import ConfigError
from markov_otel.rules import STEP_MAX, STEP_MIN, check_step


def default_steps(first: int) -> Iterator[int]:
    """first, first + 1, … up to 2**63-1, then a ConfigError: all in C (count, or chain and
    range), so one next() is atomic under the GIL. Far below 2**63-1 a `count` (a third of the
    chain's cost to build, for explicit steps that restart it) cannot reach the end: 2**62
    records take centuries. Near it, the range stops at 2**63-1 (sys.maxsize), which keeps it
    on CPython's machine-integer fast path; the last step follows on its own."""
    if first < FAR_FROM_END:
        return itertools.count(first)
    last = (STEP_MAX,) if first <= STEP_MAX else ()
    return itertools.chain(range(first, STEP_MAX), last, StepsExhausted())


FAR_FROM_END = STEP_MAX - 2**62


class StepsExhausted:
    """The default steps after step 2**63-1: there is no next int64 step."""

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        raise ConfigError(
            "the default step after step=9223372036854775807 (2**63-1) would leave the int64 "
            "range that OTLP carries; pass step= explicitly"
        )


class Steps:
    """The recorder's steps (a part of ExperimentRecorder, a mixin): the default steps, and an
    explicit `step=` that restarts them after it."""

    _steps: Iterator[int]

    def _given_step(self, step: Any) -> int:
        """An explicit step, as add_record's fast path takes it (see there)."""
        try:
            taken = next(self._steps) if type(step) is int else None
        except ConfigError:
            taken = None
        return step if step == taken else self._explicit_step(step, taken)

    def _explicit_step(self, step: Any, taken: int | None = None) -> int:
        """A given step; the default steps continue after it. `taken`: a default step add_record
        took to compare, put back when the step is refused (a refused record uses no step)."""
        if type(step) is not int or not STEP_MIN <= step <= STEP_MAX:
            try:
                step = check_step(step)
            except ConfigError:
                if taken is not None:
                    self._steps = itertools.chain((taken,), self._steps)
                raise
        self._steps = default_steps(step + 1)
        return int(step)
