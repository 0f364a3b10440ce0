"""Reading recorded runs back into Python: a table of runs, and one run's history by step.

    from markov_otel import read
    table = read.runs()                                  # the local runs (MARKOV_DIR)
    table = read.runs("http://127.0.0.1:8470", project_id="vision")   # a backend's
    loss = read.history(table.id.iloc[-1], ["loss", "val/loss"])

`source` is a runs directory (default: MARKOV_DIR / `mkv config set dir`, else ./markov-runs)
or a backend URL (`http://…`, `https://…`), read with the configured API key and CA bundle.
`runs()` and `history()` return pandas DataFrames (the optional extra `markov-otel[pandas]`);
`points()` gives the same values without pandas, one point at a time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markov_otel.config import Settings
from markov_otel.errors import BackendError, ConfigError
from markov_otel.rules import flatten_params
from markov_otel.shipping import blobs
from markov_otel.shipping import runs as local
from markov_otel.shipping.spool import check_run_id

Source = str | os.PathLike[str] | None

__all__ = ["Point", "artifacts", "download", "history", "points", "runs"]

_RUNNING = ("running", "registered")


@dataclass(frozen=True)
class Point:
    """One recorded value: step, record time, key, value (non-finite values as floats)."""

    step: int
    time_unix_nano: int
    key: str
    value: float | int


def points(
    run_id: str, keys: Iterable[str] | None = None, *, source: Source = None
) -> Iterator[Point]:
    """Every point of a run (or of `keys`) in record order (by time; the keys of one record in
    the order a batch holds them). Needs no pandas."""
    wanted = None if keys is None else set(_keys(keys))
    if _is_url(source):
        yield from _backend_points(str(source), check_run_id(run_id), wanted)
        return
    spool = local.open_run(_local_base(source), run_id)
    for batch in local.batches(spool):  # batches follow each other in time; sort within one
        batch.sort(key=lambda p: (p.time_unix_nano, p.step))
        for point in batch:
            if wanted is None or point.key in wanted:
                yield Point(point.step, point.time_unix_nano, point.key, _number(point.value))


def runs(source: Source = None, *, project_id: str | None = None) -> Any:
    """One row per run: id, name, project_id, status, start (UTC), duration (seconds: so far for
    a running run, at least that long for a crashed one), points, then `hparam.<k>` and
    `summary.<k>` columns (nested hyperparameters flattened as `a.b`). Oldest first."""
    pd = _pandas()
    rows = (
        _backend_runs(str(source), project_id)
        if _is_url(source)
        else _local_runs(_local_base(source), project_id)
    )
    frame = pd.DataFrame(rows, columns=_columns(rows))
    frame["start"] = pd.to_datetime(frame["start"], unit="s", utc=True)
    frame["duration"] = frame["duration"].astype(float)
    return frame.sort_values("start", kind="stable", na_position="first").reset_index(drop=True)


def history(run_id: str, keys: Iterable[str] | None = None, *, source: Source = None) -> Any:
    """A DataFrame indexed by step, one column per key (all keys unless `keys` names some) and
    `time`, when that step was recorded (UTC; `_time` if a key is itself named "time"). A key
    recorded twice at one step shows its last value, as W&B and TensorBoard do; `points()` and
    `mkv export` give every point."""
    pd = _pandas()
    wanted = None if keys is None else _keys(keys)
    long = pd.DataFrame(
        [(p.step, p.time_unix_nano, p.key, p.value) for p in points(run_id, wanted, source=source)],
        columns=["step", "time", "key", "value"],
    )
    long = long.sort_values("time", kind="stable").drop_duplicates(["step", "key"], keep="last")
    wide = long.pivot(index="step", columns="key", values="value")
    columns = wanted if wanted is not None else sorted(long["key"].unique())
    wide = wide.reindex(columns=columns)
    wide.columns.name = None
    times = long.groupby("step")["time"].max()
    time_column = "_time" if "time" in columns else "time"
    wide[time_column] = pd.to_datetime(times.reindex(wide.index), unit="ns", utc=True)
    wide.index = wide.index.astype("int64")
    wide.index.name = "step"
    return wide.sort_index()


# -- local runs --------------------------------------------------------------------------------


def _local_base(source: Source) -> Path:
    return Path(source) if source is not None else Settings.resolve().dir


def _local_runs(base: Path, project_id: str | None) -> list[dict[str, Any]]:
    rows = []
    for run_id in local.run_ids(base):
        spool = local.open_run(base, run_id)
        info = spool.read_recording()
        if project_id is not None and info.get("project_id") != project_id:
            continue
        timing = local.timing(spool, info)
        row = {
            "id": run_id,
            "name": info.get("name"),
            "project_id": info.get("project_id"),
            "status": local.status_of(info),
            "start": timing.started_at,
            "duration": timing.duration,
            "points": local.point_count(spool, info),
        }
        rows.append(row | _params(info))
    return rows


def _params(info: dict[str, Any]) -> dict[str, Any]:
    hparams = _flat(info.get("hyper_parameters") or {})
    summary = _flat(info.get("summary") or {})
    return {f"hparam.{k}": v for k, v in hparams.items()} | {
        f"summary.{k}": _number(v) if isinstance(v, str) else v for k, v in summary.items()
    }


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """Nested parameters as `a.b`, one top-level entry at a time: the backend keeps a nested
    value and its flat spelling (from the batches' resource attributes) side by side."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(flatten_params({key: value}))
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    fixed = ["id", "name", "project_id", "status", "start", "duration", "points"]
    extra = sorted({key for row in rows for key in row} - set(fixed))
    hparams = [k for k in extra if k.startswith("hparam.")]
    return fixed + hparams + [k for k in extra if k not in hparams]


# -- a backend ---------------------------------------------------------------------------------


def artifacts(run_id: str, *, source: Source = None) -> list[dict[str, Any]]:
    """A run's artifacts and images: name, kind, digest, size, media_type, metadata, step; from
    a run dir also `state` (pending, stored, changed) and `path` (the stored bytes)."""
    if _is_url(source):
        rid = check_run_id(run_id)
        return list(_get(str(source), f"/api/v1/recordings/{rid}/artifacts"))
    spool = local.open_run(_local_base(source), run_id)
    found = []
    for entry in blobs.artifacts(spool.dir):
        if entry["state"] == "stored":
            entry["path"] = str(blobs.blob_path(spool.dir, entry["digest"][7:]))
        found.append(entry)
    return found


def download(run_id: str, name: str, path: str | os.PathLike[str], *, source: Source = None) -> int:
    """Write artifact `name` of a run to `path` (from the run dir, else the backend, streamed);
    the bytes written."""
    target = Path(path)
    if not _is_url(source):
        latest = {a["name"]: a for a in artifacts(run_id, source=source)}.get(name)
        if latest is None or "path" not in latest:
            state = "no artifact" if latest is None else f"{latest['state']} artifact"
            raise ConfigError(f"run {run_id} has {state} {name!r} (`mkv artifacts {run_id}`)")
        shutil.copyfile(latest["path"], target)
        return target.stat().st_size
    return _download(str(source), check_run_id(run_id), name, target)


def _download(base: str, run_id: str, name: str, target: Path) -> int:
    from markov_otel.shipping.transport import BackendClient, Target

    settings = Settings.resolve({"endpoint": base})
    client = BackendClient(Target.markov(settings), 60.0)
    url = f"{client.base}/api/v1/recordings/{run_id}/artifacts/{quote(name, safe='/')}"
    try:
        with client.session.get(url, stream=True, timeout=60, verify=client.verify) as answer:
            if answer.status_code == 404:
                raise ConfigError(f"{client.base} has no artifact {name!r} in run {run_id}")
            if answer.status_code >= 400:
                raise BackendError(f"{client.base} refused {name!r}: HTTP {answer.status_code}")
            with target.open("wb") as out:
                for chunk in answer.iter_content(1 << 20):
                    out.write(chunk)
    except OSError as exc:  # requests' errors are OSErrors too
        raise BackendError(f"cannot download {name!r} from {client.base}: {exc}") from exc
    finally:
        client.close()
    return target.stat().st_size


def _is_url(source: Source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _get(base: str, path: str, params: dict[str, str] | None = None) -> Any:
    """One GET on the backend with the configured API key; our errors, not requests'."""
    from markov_otel.shipping.transport import BackendClient, Refused, Retry, Target

    settings = Settings.resolve({"endpoint": base})
    client = BackendClient(Target.markov(settings), 60.0)
    try:
        return client.call("GET", path, params=params)
    except Refused as exc:
        if exc.status == 404:
            raise ConfigError(f"{client.base} has no {path}: {exc}") from exc
        raise BackendError(f"{client.base} refused {path}: {exc}") from exc
    except Retry as exc:
        raise BackendError(f"cannot read {path} from {client.base}: {exc}") from exc
    finally:
        client.close()


def _backend_points(base: str, run_id: str, wanted: set[str] | None) -> Iterator[Point]:
    path = f"/api/v1/recordings/{run_id}"
    keys = sorted(wanted) if wanted is not None else list(_get(base, path).get("keys") or [])
    found = [
        Point(int(r["step"]), int(r["time_unix_nano"]), key, _number(r["value"]))
        for key in keys
        for r in _get(base, path + "/records", {"key": key})
    ]
    found.sort(key=lambda p: (p.time_unix_nano, p.step))  # record order, as points() says
    yield from found


def _backend_runs(base: str, project_id: str | None) -> list[dict[str, Any]]:
    params = {"project_id": project_id} if project_id is not None else None
    rows = []
    for rec in _get(base, "/api/v1/recordings", params):
        start = _seconds(rec.get("started_at")) or _seconds(rec.get("created_at"))
        end = _seconds(rec.get("ended_at"))
        if end is None and rec.get("status") not in _RUNNING:
            end = _seconds(rec.get("updated_at"))  # its last change: the final PATCH
        row = {
            "id": rec.get("recording_id"),
            "name": rec.get("name"),
            "project_id": rec.get("project_id"),
            "status": rec.get("status"),
            "start": start,
            "duration": None if start is None or end is None else max(0.0, end - start),
            "points": rec.get("points"),
        }
        rows.append(row | _params(rec))
    return rows


def _seconds(value: Any) -> float | None:
    """Unix seconds from a number or an ISO 8601 time (a trailing Z too); None if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


# -- values ------------------------------------------------------------------------------------


def _number(value: Any) -> float | int:
    """A recorded value: the protocol's "NaN", "Infinity", "-Infinity" become floats."""
    if isinstance(value, str):
        return float(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else float(value)


def _keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        return [keys]  # history(run, "loss"): one key, not the letters of it
    return list(keys)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            "markov_otel.read.runs() and history() need pandas: pip install pandas (it is the "
            "extra markov-otel[pandas]); read.points() and `mkv export` work without it"
        ) from exc
    return pandas
