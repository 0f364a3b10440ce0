"""A stand-in encoder process: a real child that speaks the encoder process's protocol (see
markov_otel/shipping/encoder_process.py) but breaks its answer sequence on purpose.

Put this directory on PYTHONPATH and set MARKOV_TEST_PEER to `swap` or `repeat`: any Python
started as the encoder process (`python -c <start> <package dir> <metrics file> <rank>`) runs
this peer instead and never reaches the real one. It encodes and appends every batch as the real
process does, answering batches 1 and 2 in order, then:
  swap    holds batch 3, writes and answers batch 4, then writes and answers batch 3;
  repeat  answers batch 3 with batch 2's answer again and writes nothing of batch 3;
and every later batch in order, as the real process would.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">Q")


def _load(package_dir: str) -> None:
    """This markov_otel, by its location (as the real process's start does)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "markov_otel", package_dir + "/__init__.py", submodule_search_locations=[package_dir]
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules["markov_otel"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _say(message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.write(_HEADER.pack(len(payload)) + payload)
    sys.stdout.buffer.flush()


def _frames() -> Iterator[Any]:
    inp = sys.stdin.buffer
    while len(header := inp.read(_HEADER.size)) == _HEADER.size:
        (size,) = _HEADER.unpack(header)
        yield pickle.loads(inp.read(size))


def peer(mode: str, package_dir: str, metrics_file: str, rank: str) -> None:
    _load(package_dir)
    from markov_otel.otel.encoding import MetricsEncoder, encode_lines, layout
    from markov_otel.otel.series import SeriesTable

    table = SeriesTable(int(rank) if rank else None)
    encoder = MetricsEncoder(table)
    fd = os.open(metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def encode(frame: Any) -> tuple[int, bytes, list[int], Any]:
        seq, times, steps, values, split, resource, max_bytes, described = frame
        for series in described:
            table.describe(series.key, series.name, series.attributes)
        grouped = layout(values)[0] if split is None else [(split[0], 0, len(times))]
        lines = encode_lines(encoder, times, steps, values, resource, max_bytes, grouped, split)
        return seq, b"".join(line for line, _ in lines), [p for _, p in lines], grouped

    def write_and_answer(seq: int, data: bytes, points: list[int], grouped: Any) -> Any:
        os.write(fd, data)
        answer = (seq, points, grouped, os.lseek(fd, 0, os.SEEK_END))
        _say(answer)
        return answer

    _say(("ready",))
    held = None
    last = None
    for frame in _frames():
        seq, data, points, grouped = encode(frame)
        if mode == "swap" and seq == 3:
            held = (seq, data, points, grouped)  # answered after batch 4
            continue
        if mode == "repeat" and seq == 3:
            assert last is not None
            _say(last)  # batch 2's answer again; batch 3 is never written
            continue
        last = write_and_answer(seq, data, points, grouped)
        if held is not None:
            last, held = write_and_answer(*held), None


def _started_as_the_encoder() -> bool:
    cmdline = Path("/proc/self/cmdline").read_bytes()
    return len(sys.argv) == 4 and b"shipping.encoder_process import run" in cmdline


_mode = os.environ.get("MARKOV_TEST_PEER", "")
if _mode and _started_as_the_encoder():
    with contextlib.suppress(BrokenPipeError):  # the flusher dropped this peer: pipes closed
        peer(_mode, *sys.argv[1:])
    os._exit(0)
