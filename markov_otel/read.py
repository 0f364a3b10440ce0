"""Reading recorded runs back into Python: a table of runs, and one run's history by step.

    from markov_otel import read
    table = read.runs()                                  # the local runs (MARKOV_DIR)
    table = read.runs("http://127.0.0.1:8470", project_id="vision")   # a backend's
    loss = read.history(table.id.iloc[-1], ["loss", "val/loss"])

`source` is a runs directory (default: MARKOV_DIR / `mkv config set dir`, else ./markov-runs)
or a backend URL (`http://…`, `https://…`), read with the configured API key and CA bundle.
`runs()` and `history()` return pandas DataFrames (the optional extra `markov-otel[pandas]`);
`points()` gives the same values without pandas, one point at a time. `distributions()` and
`texts()` give a key's recorded arrays (ExponentialHistograms) and texts, by step.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markov_otel.config import Settings, redact_url
from markov_otel.errors import BackendError, ConfigError
from markov_otel.rules import flatten_params
from markov_otel.shipping import blobs
from markov_otel.shipping import runs as local
from markov_otel.shipping.spool import check_run_id

Source = str | os.PathLike[str] | None

__all__ = [
    "Distribution",
    "Point",
    "Text",
    "artifacts",
    "distributions",
    "download",
    "history",
    "points",
    "resolve_id",
    "runs",
    "texts",
]

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


def history(
    run_id: str | Sequence[str],
    keys: Iterable[str] | None = None,
    *,
    source: Source = None,
    max_points: int | None = None,
) -> Any:
    """A DataFrame indexed by step, one column per key (all keys unless `keys` names some) and
    `time`, when that step was recorded (UTC; `_time` if a key is itself named "time"). A key
    recorded twice at one step shows its last value, as W&B and TensorBoard do; `points()` and
    `mkv export` give every point.

    Given a list of ids, a dict {id: DataFrame} in that order; from a backend they come in one
    request per 100 runs. `max_points` (backend only) has the backend downsample each key to at
    most that many points, each step bucket's smallest and largest value (a spike survives)."""
    pd = _pandas()
    wanted = None if keys is None else _keys(keys)
    many = not isinstance(run_id, str)
    ids = list(run_id) if many else [str(run_id)]
    if _is_url(source):
        frames = _backend_history(str(source), ids, wanted, max_points)
    elif max_points is not None:
        raise ConfigError(
            "max_points downsamples on a backend (source='http://…'); a local run is read whole"
        )
    else:
        frames = {rid: _local_history(pd, rid, wanted, source) for rid in ids}
    return frames if many else frames[ids[0]]


def _local_history(pd: Any, run_id: str, wanted: list[str] | None, source: Source) -> Any:
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


@dataclass(frozen=True)
class Distribution:
    """One recorded array at one step: its OTLP ExponentialHistogram (docs/protocol.md).
    `count`, `sum`, `min`, `max` are of the finite elements; NaN and ±inf are counted apart."""

    step: int
    time_unix_nano: int
    count: int
    sum: float
    min: float | None
    max: float | None
    zero_count: int
    scale: int
    positive_offset: int
    positive: tuple[int, ...]
    negative_offset: int
    negative: tuple[int, ...]
    nan_count: int = 0
    posinf_count: int = 0
    neginf_count: int = 0

    def buckets(self) -> list[tuple[float, float, int]]:
        """(lower, upper, count) of every bucket in ascending order: negatives, the zero
        bucket (0, 0), positives. A positive bucket i holds (base**i, base**(i+1)]."""
        base = 2.0 ** (2.0**-self.scale)
        out = [
            (-(base ** (self.negative_offset + i + 1)), -(base ** (self.negative_offset + i)), n)
            for i, n in reversed(list(enumerate(self.negative)))
        ]
        if self.zero_count:
            out.append((0.0, 0.0, self.zero_count))
        out += [
            (base ** (self.positive_offset + i), base ** (self.positive_offset + i + 1), n)
            for i, n in enumerate(self.positive)
        ]
        return out


@dataclass(frozen=True)
class Text:
    """One recorded text: step, record time, the text."""

    step: int
    time_unix_nano: int
    text: str


def distributions(run_id: str, key: str, *, source: Source = None) -> list[Distribution]:
    """The distributions recorded under `key` (arrays given to add_record), by step."""
    if _is_url(source):
        path = f"/api/v1/recordings/{check_run_id(run_id)}/distributions"
        docs = _get(str(source), path, {"key": key})
    else:
        docs = list(_local_distributions(local.open_run(_local_base(source), run_id), key))
    found = [_distribution(d) for d in docs]
    return sorted(found, key=lambda d: (d.step, d.time_unix_nano))


def texts(run_id: str, key: str, *, source: Source = None) -> list[Text]:
    """The texts recorded under `key` (strings given to add_record), by step."""
    if _is_url(source):
        path = f"/api/v1/recordings/{check_run_id(run_id)}/texts"
        docs = _get(str(source), path, {"key": key})
    else:
        docs = list(_local_texts(local.open_run(_local_base(source), run_id), key))
    found = [Text(int(d["step"]), int(d["time_unix_nano"]), str(d["text"])) for d in docs]
    return sorted(found, key=lambda t: (t.step, t.time_unix_nano))


def _distribution(doc: dict[str, Any]) -> Distribution:
    """A point as the backend answers it (and `_local_distributions` reads it)."""
    return Distribution(
        step=int(doc["step"]),
        time_unix_nano=int(doc["time_unix_nano"]),
        count=int(doc["count"]),
        sum=float(doc["sum"]),
        min=None if doc.get("min") is None else float(doc["min"]),
        max=None if doc.get("max") is None else float(doc["max"]),
        zero_count=int(doc["zero_count"]),
        scale=int(doc["scale"]),
        positive_offset=int(doc["positive"]["offset"]),
        positive=tuple(int(c) for c in doc["positive"]["bucket_counts"]),
        negative_offset=int(doc["negative"]["offset"]),
        negative=tuple(int(c) for c in doc["negative"]["bucket_counts"]),
        nan_count=int(doc.get("nan_count") or 0),
        posinf_count=int(doc.get("posinf_count") or 0),
        neginf_count=int(doc.get("neginf_count") or 0),
    )


def _local_distributions(spool: Any, key: str) -> Iterator[dict[str, Any]]:
    """The ExponentialHistogram points of a run dir's metrics.jsonl, in the backend's shape."""
    for line in spool.lines("metrics"):
        if b"exponentialHistogram" not in line.data:
            continue
        doc = json.loads(line.data)
        for rm in doc.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    histogram = metric.get("exponentialHistogram") or {}
                    for dp in histogram.get("dataPoints", []):
                        attrs = _attributes(dp.get("attributes"))
                        if attrs.get("markov.key", metric["name"]) == key:
                            yield _local_point(dp, attrs)


def _local_point(dp: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    def side(s: dict[str, Any] | None) -> dict[str, Any]:
        s = s or {}
        return {"offset": s.get("offset", 0), "bucket_counts": s.get("bucketCounts", [])}

    return {
        "step": attrs["markov.step"],
        "time_unix_nano": dp["timeUnixNano"],
        "count": dp.get("count", 0),
        "sum": dp.get("sum", 0.0),
        "min": dp.get("min"),
        "max": dp.get("max"),
        "zero_count": dp.get("zeroCount", 0),
        "scale": dp.get("scale", 0),
        "positive": side(dp.get("positive")),
        "negative": side(dp.get("negative")),
        **{n: attrs.get(f"markov.{n}", 0) for n in ("nan_count", "posinf_count", "neginf_count")},
    }


def _local_texts(spool: Any, key: str) -> Iterator[dict[str, Any]]:
    """The markov.text log records of a run dir's logs.jsonl under `key`."""
    for line in spool.lines("logs"):
        if b"markov.text" not in line.data:
            continue
        doc = json.loads(line.data)
        for rl in doc.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for record in sl.get("logRecords", []):
                    attrs = _attributes(record.get("attributes"))
                    if record.get("eventName") == "markov.text" and attrs.get("markov.key") == key:
                        yield {
                            "step": attrs["markov.step"],
                            "time_unix_nano": record["timeUnixNano"],
                            "text": (record.get("body") or {}).get("stringValue", ""),
                        }


def _attributes(key_values: Any) -> dict[str, Any]:
    """OTLP-JSON attributes of the recorder's own lines: strings and ints."""
    out: dict[str, Any] = {}
    for kv in key_values or ():
        value = kv.get("value") or {}
        out[kv["key"]] = int(value["intValue"]) if "intValue" in value else value.get("stringValue")
    return out


def resolve_id(given: str, *, source: Source = None) -> str:
    """The recording id `given` names in `source`: itself, or the one id that starts with it (as
    git takes a commit). ConfigError when none or several match, naming the candidates."""
    if not _is_url(source):
        return local.resolve_run_id(_local_base(source), given)
    base = str(source)
    check_run_id(given)
    try:
        _get(base, f"/api/v1/recordings/{given}")
        return given
    except ConfigError:  # 404: not a whole id there; a start of one?
        pass
    ids = [str(r.get("recording_id")) for r in _get(base, "/api/v1/recordings")]
    found = sorted(i for i in ids if i.startswith(given))
    if len(found) == 1:
        return found[0]
    where = redact_url(base)
    if not found:
        raise ConfigError(f"no recording {given!r} on {where}; its runs page lists them: {where}/")
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise ConfigError(
        f"{given!r} is the start of {len(found)} recordings on {where} ({shown}); "
        "give more of the id"
    )


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
    return {
        f"hparam.{k}": _NON_FINITE.get(v, v) if isinstance(v, str) else v
        for k, v in hparams.items()
    } | {f"summary.{k}": _number(v) if isinstance(v, str) else v for k, v in summary.items()}


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


def _get(base: str, path: str, params: dict[str, Any] | None = None, **options: Any) -> Any:
    """One GET on the backend with the configured API key (`options`: BackendClient.call's);
    our errors, not requests'."""
    from markov_otel.shipping.transport import BackendClient, Refused, Retry, Target

    settings = Settings.resolve({"endpoint": base})
    client = BackendClient(Target.markov(settings), 60.0)
    try:
        return client.call("GET", path, params=params, **options)
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


_HISTORY_IDS = 100  # recordings per GET /api/v1/history (the server's limit)
# The binary form of the answer (server/history.py): frames of a JSON header and, per key, its
# n steps, n values and n times (server/blocks.py).
_HISTORY_TYPE = "application/x-markov-history"
_COLUMNS = (("step", "<i8"), ("value", "<f8"), ("time", "<i8"))

Columns = tuple[Any, Any, Any]  # numpy arrays: step, value, time


def _backend_history(
    base: str, ids: list[str], wanted: list[str] | None, max_points: int | None
) -> dict[str, Any]:
    """{id: frame} from GET /api/v1/history: packed columns, one request per 100 recordings."""
    frames: dict[str, Any] = {}
    for start in range(0, len(ids), _HISTORY_IDS):
        chunk = [check_run_id(rid) for rid in ids[start : start + _HISTORY_IDS]]
        params: dict[str, Any] = {"ids": ",".join(chunk)}
        if wanted is not None:
            params["key"] = wanted
        if max_points is not None:
            params["max_points"] = str(max_points)
        answer = _get(base, "/api/v1/history", params, raw=True, headers={"Accept": _HISTORY_TYPE})
        try:
            for rid, columns in _history_runs(answer):
                frames[rid] = _packed_frame(columns, wanted)
        except ValueError as exc:  # numpy's short buffer, a bad header: a cut-off answer
            raise BackendError(f"{base} sent a broken history answer: {exc}") from exc
        if missing := [rid for rid in chunk if rid not in frames]:
            raise BackendError(f"{base} sent no history of {', '.join(missing)} (cut off?)")
    return {rid: frames[rid] for rid in ids}


def _history_runs(answer: Any) -> Iterator[tuple[str, dict[str, Columns]]]:
    """(id, {key: columns}) of each recording in the answer, numpy views of the body."""
    import numpy as np

    if not answer.headers.get("Content-Type", "").startswith(_HISTORY_TYPE):  # the JSON form
        for run in answer.json()["runs"]:
            yield (
                run["recording_id"],
                {
                    key: tuple(_array(np, a[c], t) for c, t in _COLUMNS)
                    for key, a in run["keys"].items()
                },
            )
        return
    body, at = answer.content, 0
    while at < len(body):
        size = int.from_bytes(body[at : at + 4], "little")
        header = json.loads(body[at + 4 : at + 4 + size])
        at += 4 + size
        keys = {}
        for key, n in header["keys"]:
            columns = []
            for _, dtype in _COLUMNS:
                columns.append(np.frombuffer(body, dtype, n, at))  # short: a ValueError
                at += 8 * n
            keys[key] = (columns[0], columns[1], columns[2])
        yield header["recording_id"], keys


def _packed_frame(packed: dict[str, Columns], wanted: list[str] | None) -> Any:
    """The wide frame of one run from its keys' columns (each by step, then time), built in
    numpy: the union of the steps, each key's values placed at theirs."""
    import numpy as np

    pd = _pandas()
    found = {}
    for key, (step, value, time) in packed.items():
        last = np.ones(len(step), dtype=bool)  # the last point of each step: the latest time
        last[:-1] = step[1:] != step[:-1]
        found[key] = (step[last], value[last], time[last])
    columns = wanted if wanted is not None else sorted(packed)
    each = [f[0] for f in found.values()] or [np.empty(0, "<i8")]
    same = all(len(s) == len(each[0]) and (s == each[0]).all() for s in each[1:])
    steps = each[0] if same else np.unique(np.concatenate(each))  # keys mostly share steps
    when = np.full(len(steps), np.iinfo(np.int64).min, dtype=np.int64)
    data = {}
    for key in columns:
        data[key] = np.full(len(steps), np.nan)
        if key in found:
            step, value, time = found[key]
            at = np.searchsorted(steps, step)
            data[key][at] = value
            when[at] = np.maximum(when[at], time)
    wide = pd.DataFrame(data, index=pd.Index(steps.astype("int64"), name="step"), columns=columns)
    time_column = "_time" if "time" in columns else "time"
    wide[time_column] = pd.to_datetime(when, unit="ns", utc=True)
    return wide


def _array(np: Any, packed: str, dtype: str) -> Any:
    return np.frombuffer(base64.b64decode(packed), dtype)


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


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How JSON (recording.json, the backend) holds a non-finite float: read back as the float."""


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
