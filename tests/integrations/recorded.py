"""What an integration recorded, read back from its run dir through the OTLP proto classes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import otlp_files


def only_run(markov_dir: Path) -> Path:
    """The one run dir under `markov_dir` (the test fails if there are more or none)."""
    dirs = [p for p in markov_dir.iterdir() if (p / "recording.json").is_file()]
    assert len(dirs) == 1, f"expected one recording, found {[p.name for p in dirs]}"
    return dirs[0]


def series(run_dir: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every key's (step, value) points, in the order they were written."""
    out: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for point in otlp_files.points(run_dir):
        out[point.key].append((point.step, point.value))
    return dict(out)


def steps(run_dir: Path, key: str) -> list[int]:
    return [step for step, _ in series(run_dir).get(key, [])]


def values(run_dir: Path, key: str) -> list[Any]:
    return [value for _, value in series(run_dir).get(key, [])]
