"""How `mkv` shows runs to a person: local times, durations, sizes, and what "unsent" means."""

from __future__ import annotations

import time

from markov_otel.shipping.runs import SyncState, Timing


def local_time(seconds: float | None, *, precise: bool = False) -> str:
    """Unix seconds as local time: `2024-05-01 12:01` (with `:05` when precise); '-' if unknown."""
    if seconds is None:
        return "-"
    return time.strftime(
        "%Y-%m-%d %H:%M:%S" if precise else "%Y-%m-%d %H:%M", time.localtime(seconds)
    )


def duration(seconds: float | None) -> str:
    """`0.4s`, `12s`, `3m05s`, `2h03m`, `1d02h`: short, and one word (a table cell)."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def duration_cell(timing: Timing) -> str:
    """The DURATION column: a crashed run ran at least that long (`3m05s+`)."""
    text = duration(timing.duration)
    return text + "+" if timing.state == "crashed" and timing.duration is not None else text


def duration_line(timing: Timing) -> str:
    """`mkv show`'s duration, saying what kind of number it is."""
    text = duration(timing.duration)
    if timing.state == "running":
        return f"{text} so far (running)"
    if timing.state == "crashed":
        if timing.duration is None:
            return "unknown (crashed before writing any batch)"
        return f"at least {text} (crashed; that is its last write to disk)"
    return text


def size(count: float) -> str:
    """Bytes as pip shows them: `512 bytes`, `1.2 kB`, `3.4 MB`, `1.1 GB` (powers of 1000)."""
    if count < 1000:
        return f"{int(count)} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000 or unit == "TB":
            break
    return f"{count:.1f} {unit}"


def size_pair(done: float, total: float) -> str:
    """`13.4/27.8 MB`: both in the total's unit, as pip shows a download."""
    whole = size(total)
    if total < 1000:
        return f"{int(done)}/{whole}"
    number, unit = whole.split()
    scale = {"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]
    return f"{done / scale:.1f}/{number} {unit}"


def sync_cell(state: SyncState, mode: str) -> str:
    """The SYNC column: `sent`, `local` (offline, never synced), `5-unsent`; `+2-refused`;
    `sent-elsewhere`: never sent to this backend, but whole on another one."""
    if state.unsent == 0:
        text = "sent"
    elif state.elsewhere:
        text = "sent-elsewhere"
    elif state.never_sent and mode == "offline":
        text = "local"
    else:
        text = f"{state.unsent}-unsent"
    return text + (f"+{state.set_aside}-refused" if state.set_aside else "")


def sync_line(state: SyncState, mode: str, run_id: str) -> str:
    """`mkv show`'s sync state in words: where the run is, and the command that finishes it."""
    where = state.backend or "the backend"
    if state.unsent == 0:
        text = f"all sent to {where}"
    elif state.elsewhere:  # not unsent: sent to the backend it was meant for, not this one
        text = f"all sent to {', '.join(state.elsewhere)}; not to {where}, the endpoint set here"
    elif state.never_sent and mode == "offline":
        text = (
            f"local only (recorded offline, never synced); `mkv sync {run_id}` sends it to {where}"
        )
    else:
        text = f"not yet sent to {where}: {state.unsent} batches; `mkv sync {run_id}` sends them"
    if state.set_aside:
        text += f"; {state.set_aside} batches refused by it (below)"
    return text
