"""Default steps: previous + 1, taken atomically by threads recording at once.

A step is one next() of a C iterator (`itertools.count`, or near the end a `range` chained with
the last step), which is one C call under the GIL: two threads never take the same step. An
explicit `step=` restarts the count after it (recorder.add_record); past 2**63-1, which OTLP's
int64 cannot carry, the next default step is a ConfigError.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from markov_otel.errors import ConfigError
from markov_otel.rules import STEP_MAX


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
