"""Record keys that stand for an OTel series with attributes: system samples and rank-tagged keys.

Our backend keeps one series per record key (`markov.key`), so an attribute that tells series
apart (a CPU mode, a GPU, a rank) is folded into the key as `/<label>.<value>`, e.g.
`system.cpu.utilization/mode.user`, `hw.gpu.utilization/gpu.0`, `loss/rank.1`. On the wire
the metric keeps its semantic-convention name and the attributes stay attributes; `markov.key`
carries the folded key (docs/protocol.md, "Series with attributes").

The table is written by the sampler thread before it appends a record with a new key, and read
by the flusher's encoder the first time it meets a key (then cached), so no per-point cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RANK_ATTRIBUTE = "markov.rank"


def fold(name: str, parts: Mapping[str, Any]) -> str:
    """`name/<label>.<value>…` in the mapping's order: the record key of one series."""
    return "".join([name, *(f"/{label}.{value}" for label, value in parts.items())])


@dataclass(frozen=True)
class Series:
    """How one record key goes on the wire: metric name, point attributes, stored key."""

    name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""


class SeriesTable:
    """Keys described by the sampler, and (with `tag_rank`) every other key tagged with a rank."""

    def __init__(self, tag_rank: int | None = None) -> None:
        self._described: dict[str, Series] = {}
        self._tag_rank = tag_rank

    def describe(self, key: str, name: str, attributes: Mapping[str, Any]) -> None:
        """Record key `key` is metric `name` with `attributes` (the sampler's keys)."""
        if key not in self._described:
            self._described[key] = Series(name, dict(attributes), key)

    @property
    def tag_rank(self) -> int | None:
        return self._tag_rank

    def described_since(self, count: int) -> list[Series]:
        """The keys described after the first `count` (the table only grows, in order)."""
        return list(self._described.values())[count:] if len(self._described) > count else []

    def lookup(self, key: str, plain_name: str) -> Series | None:
        """The series of `key`, or None when it goes on the wire as it always did."""
        described = self._described.get(key)
        if described is not None or self._tag_rank is None:
            return described
        rank = self._tag_rank
        return Series(plain_name, {RANK_ATTRIBUTE: rank}, fold(key, {"rank": rank}))
