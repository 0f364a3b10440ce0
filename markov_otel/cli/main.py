"""`mkv`: mode, config, runs, show, sync, export, serve, env. Our errors become one line on
stderr. A RUN argument is a recording id or a unique start of one, as git takes a commit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markov_otel.cli import display
from markov_otel.cli.progress_bar import ProgressBar
from markov_otel.config import (
    DEFAULT,
    ENV,
    ENV_MODE,
    EXPLICIT,
    FILE,
    FILE_KEYS,
    RecordingMode,
    Settings,
    config_path,
    redact_url,
    write_config_value,
)
from markov_otel.environments import capture, rebuild
from markov_otel.errors import ConfigError, MarkovError
from markov_otel.recording.artifacts import finish_pending
from markov_otel.server import options as serve_options
from markov_otel.shipping import runs
from markov_otel.shipping.blobs import artifacts as artifacts_of
from markov_otel.shipping.sender import Progress
from markov_otel.shipping.spool import check_run_id, read_json
from markov_otel.shipping.uploads import unsent_count


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MarkovError as exc:
        print(f"mkv: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mkv: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mkv export RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkv", description="markov_otel experiment recorder")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    mode = sub.add_parser("mode", help="show or set the default recording mode")
    mode.add_argument("mode", nargs="?", choices=[m.value for m in RecordingMode])
    mode.set_defaults(run=cmd_mode)

    config = sub.add_parser(
        "config",
        help="list, get or set settings (set/unset: the config file)",
        description="`list`: every setting, its value and where it comes from (environment, "
        "config file, default); `get KEY`: the value in effect (its source on stderr); "
        "`set KEY VALUE` / `unset KEY`: the config file; `path`: where the file is.",
    )
    config.add_argument("action", choices=["list", "get", "set", "unset", "path"])
    config.add_argument("key", nargs="?", choices=list(FILE_KEYS))
    config.add_argument("value", nargs="?")
    config.set_defaults(run=cmd_config)

    listing = sub.add_parser("runs", help="list local runs")
    listing.add_argument("--dir", help="runs directory (default: MARKOV_DIR or ./markov-runs)")
    listing.set_defaults(run=cmd_runs)

    show = sub.add_parser("show", help="show one local run")
    show.add_argument("run_id", metavar="RUN", help="a recording id, or a unique start of one")
    show.add_argument("--dir")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=cmd_show)

    sync = sub.add_parser("sync", help="upload offline runs and whatever an online run left")
    sync.add_argument(
        "run_ids", nargs="*", metavar="RUN", help="recording ids, or unique starts of them"
    )
    sync.add_argument("--all", action="store_true", help="every local run with unsent data")
    sync.add_argument("--endpoint", help="backend URL (default: MARKOV_ENDPOINT / config)")
    sync.add_argument("--dir")
    sync.add_argument("--timeout", type=float, help="give up after this many seconds")
    sync.add_argument(
        "--resend-set-aside",
        action="store_true",
        help="try again the lines this backend refused before (see `mkv show RUN_ID`)",
    )
    sync.set_defaults(run=cmd_sync)

    serve = sub.add_parser("serve", help="run the reference Markov backend")
    serve_options.add_arguments(serve)  # the same options as `python -m markov_otel.server`

    export = sub.add_parser(
        "export",
        help="write a run's points as a table (step, time, key, value)",
        description="One row per recorded point, in record order: step, time (UTC, ISO 8601 "
        "with nanoseconds), key, value (non-finite values as NaN, Infinity, -Infinity).",
    )
    export.add_argument("run_id", metavar="RUN", help="a recording id, or a unique start of one")
    export.add_argument("--format", choices=["csv", "jsonl", "parquet"], default="csv",
                        help="csv (default), jsonl, or parquet (needs pyarrow)")  # fmt: skip
    export.add_argument("-o", "--output", help="file to write (default: stdout; parquet needs one)")
    export.add_argument("--dir")
    export.add_argument(
        "--endpoint", help="read the run from this backend instead of the local runs directory"
    )
    export.add_argument(
        "--distributions", metavar="KEY",
        help="instead of points: the arrays recorded under KEY, one row per step (count, sum, "
        "min, max, zero_count, scale, buckets; jsonl or parquet)",
    )  # fmt: skip
    export.add_argument(
        "--texts", metavar="KEY",
        help="instead of points: the texts recorded under KEY, one row per step (jsonl, parquet)",
    )  # fmt: skip
    export.set_defaults(run=cmd_export)

    manage = {
        "tag": "add tags to a run on the backend (--remove: take them off)",
        "note": "set a run's notes on the backend",
        "archive": "archive a run on the backend: the runs page hides it (--undo: bring it back)",
        "rm": "delete a run on the backend, with every point of it (asks unless --yes)",
    }
    for name, text in manage.items():
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("run_id", metavar="RUN", help="a recording id, or a unique start")
        if name == "tag":
            command.add_argument("tags", nargs="+", metavar="TAG")
            command.add_argument("--remove", action="store_true", help="take these tags off")
        elif name == "note":
            command.add_argument("text", metavar="TEXT", help="the notes ('' clears them)")
        elif name == "archive":
            command.add_argument("--undo", action="store_true", help="unarchive")
        else:
            command.add_argument("--yes", action="store_true", help="do not ask")
        command.add_argument("--endpoint", help="backend URL (default: MARKOV_ENDPOINT / config)")
        command.set_defaults(run=cmd_manage, command=name)

    files = sub.add_parser("artifacts", help="list a run's artifacts and images")
    files.add_argument("run_id", metavar="RUN", help="a recording id, or a unique start of one")
    files.add_argument("--dir")
    files.add_argument("--endpoint", help="list them on this backend instead of the run dir")
    files.add_argument("--json", action="store_true", help="print JSON")
    files.set_defaults(run=cmd_artifacts)

    get = sub.add_parser("get", help="write one artifact of a run to a file")
    get.add_argument("run_id", metavar="RUN", help="a recording id, or a unique start of one")
    get.add_argument("name", metavar="NAME", help="the artifact's name (`mkv artifacts RUN`)")
    get.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    get.add_argument("--dir")
    get.add_argument("--endpoint", help="download it from this backend instead of the run dir")
    get.set_defaults(run=cmd_get)

    env = sub.add_parser("env", help="rebuild a run's environment")
    env.add_argument("what", choices=["requirements", "venv", "conda"])
    env.add_argument("run_id", metavar="RUN")
    env.add_argument(
        "path",
        nargs="?",
        help="where to write (default: requirements to stdout, venv ./RUN_venv, "
        "conda ./RUN_conda_env)",
    )
    env.add_argument("--dir")
    env.add_argument("--endpoint")
    env.set_defaults(run=cmd_env)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.resolve(
        {"dir": getattr(args, "dir", None), "endpoint": getattr(args, "endpoint", None)}
    )


# -- mode and config ---------------------------------------------------------------------------


def cmd_mode(args: argparse.Namespace) -> int:
    if args.mode:
        path = write_config_value("mode", args.mode)
        print(f"recording mode: {args.mode} (saved in {path})")
        if os.environ.get(ENV_MODE):
            print(f"note: {ENV_MODE}={os.environ[ENV_MODE]} overrides it in this shell")
        return 0
    return _print_setting(Settings.resolve(), "mode")


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "path":
        print(config_path())
        return 0
    if args.action == "list":
        return _list_settings(Settings.resolve())
    if not args.key:
        raise ConfigError(f"`mkv config {args.action}` needs a KEY: {', '.join(FILE_KEYS)}")
    if args.action == "set":
        if args.value is None:
            raise ConfigError(f"`mkv config set {args.key}` needs a VALUE")
        write_config_value(args.key, args.value)
    elif args.action == "unset":
        write_config_value(args.key, None)
    else:
        return _print_setting(Settings.resolve(), args.key)
    return 0


def _print_setting(settings: Settings, key: str) -> int:
    """The value in effect on stdout (scripts read it), where it comes from on stderr; exit 1
    when the key has no value at all."""
    value = _shown_value(settings, key)
    if value is None:
        print(f"{key} is not set ({_origin(settings, key)})", file=sys.stderr)
        return 1
    print(value)
    print(f"({_origin(settings, key)})", file=sys.stderr)
    return 0


def _list_settings(settings: Settings) -> int:
    rows = [(key, _shown_value(settings, key), _origin(settings, key)) for key in FILE_KEYS]
    width = max(len(str(value)) for _, value, _ in rows)
    width = min(max(width, 5), 40)
    print(f"{'KEY':20} {'VALUE':{width}}  SOURCE")
    for key, value, origin in rows:
        print(f"{key:20} {'-' if value is None else value:{width}}  {origin}")
    return 0


def _shown_value(settings: Settings, key: str) -> str | None:
    value = getattr(settings, key)
    if key == "api_key":
        return "<set>" if value else None  # never the key itself
    if value is None:
        return None
    if isinstance(value, RecordingMode):
        return value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _origin(settings: Settings, key: str) -> str:
    """Where a setting's value comes from, in words."""
    source = settings.source(key)
    if source == ENV:
        return f"environment {FILE_KEYS[key]}"
    if source == FILE:
        return f"config file {config_path()}"
    if source == EXPLICIT:
        return f"--{key} option"
    if key == "mode" and source == DEFAULT:
        if settings.offline_by_default:
            return "default: offline while no endpoint is configured"
        return "default: online, as an endpoint is configured"
    return DEFAULT


# -- runs and show -----------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    settings = _settings(args)
    base = settings.dir
    ids = runs.run_ids(base)
    if not ids:
        print(f"no runs in {base}")
        return 0
    print(
        f"{'RECORDING ID':32}  {'NAME':20} {'STATUS':9} {'STARTED':16} {'DURATION':>8} "
        f"{'POINTS':>8}  SYNC"
    )
    for run_id in ids:
        spool = runs.open_run(base, run_id)
        info = spool.read_recording()
        timing = runs.timing(spool, info)
        state = runs.sync_state(spool, settings.endpoint)
        name = str(info.get("name") or "-").replace(" ", "_")[:20]
        print(
            f"{run_id:32}  {name:20} {runs.status_of(info):9} "
            f"{display.local_time(timing.started_at):16} {display.duration_cell(timing):>8} "
            f"{runs.point_count(spool, info):>8}  {display.sync_cell(state, str(info.get('mode')))}"
        )
    print(
        f"SYNC: against {redact_url(settings.endpoint)} (sent-elsewhere: whole on another "
        "backend); `mkv show RUN` says more"
    )
    return 0


_SHOWN = ("recording_id", "name", "project_id", "status", "started", "duration", "model_class",
          "model_id", "dataset_id", "notes", "points", "sync", "run_dir")  # fmt: skip
SHOW_KEY_WIDTH = 60
"""`mkv show` aligns the values of a section past its longest key, up to this many characters."""


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_id = runs.resolve_run_id(settings.dir, args.run_id)
    spool = runs.open_run(settings.dir, run_id)
    info = spool.read_recording()
    timing = runs.timing(spool, info)
    state = runs.sync_state(spool, settings.endpoint)
    aside = runs.set_aside(spool, settings.endpoint)
    info["points"] = runs.point_count(spool, info)
    info["status"] = runs.status_of(info)
    info["duration"] = timing.duration
    info["unsent_lines"] = state.unsent
    info["set_aside"] = [vars(e) for e in aside]
    info["run_dir"] = str(spool.dir)
    model = [a for a in artifacts_of(spool.dir) if a["kind"] == "model"]
    if model:  # the latest kind="model" artifact is the model behind model_id
        info["model"] = {k: model[-1].get(k) for k in ("name", "digest", "size", "state")}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    info["started"] = display.local_time(timing.started_at, precise=True)
    info["duration"] = display.duration_line(timing)
    info["sync"] = display.sync_line(state, str(info.get("mode")), run_id)
    for key in _SHOWN:
        if info.get(key) not in (None, ""):  # an unset note is not "None"
            print(f"{key:13} {info[key]}")
    if model:
        m = info["model"]
        print(f"{'model':13} {m['name']} ({m['state']}, {m['size']} bytes, {m['digest']})")
    for title in ("hyper_parameters", "summary", "last_values"):
        if info.get(title):
            print(f"{title}:")
            # values in one column past the longest key (up to SHOW_KEY_WIDTH: a longer key
            # keeps one space rather than pushing every value off the screen)
            width = max(24, min(SHOW_KEY_WIDTH, max(map(len, info[title]))))
            for key, value in sorted(info[title].items()):
                print(f"  {key:{width}} {value}")
    if info.get("alerts"):
        print("alerts:")
        for alert in info["alerts"]:
            print(
                f"  step {alert.get('step')}: {alert.get('text')} "
                f"({alert.get('metric_name')}={alert.get('value')})"
            )
    if aside:
        print(
            f"set aside (refused by {redact_url(settings.endpoint)}; resend with "
            f"`mkv sync {run_id} --resend-set-aside` once the cause is fixed):"
        )
        for entry in aside:
            print(f"  {entry.signal}.jsonl line {entry.line}: {entry.reason}")
    return 0


# -- sync and export ---------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ids = [runs.resolve_run_id(settings.dir, given) for given in args.run_ids]
    if args.all:
        work = {r: _work(settings, r, args) for r in runs.run_ids(settings.dir) if r not in ids}
        ids += [r for r, what in work.items() if what == "send"]
        if elsewhere := sum(what == "elsewhere" for what in work.values()):
            print(
                f"left {elsewhere} runs sent whole to other backends (`mkv sync RUN` copies one "
                f"to {redact_url(settings.endpoint)})"
            )
    elif not ids:
        raise ConfigError("name the runs to sync (mkv sync RUN …) or pass --all")
    if not ids:
        where = redact_url(settings.endpoint)
        print(f"nothing to sync: every run in {settings.dir} is sent to {where}")
    refused = [run_id for run_id in ids if not _sync_one(settings, run_id, args)]
    return 1 if refused else 0  # a script must notice data the backend does not have


def _work(settings: Settings, run_id: str, args: argparse.Namespace) -> str:
    """What `mkv sync --all` does with a run: "send" (unsent lines, or set-aside lines when
    resending those), "elsewhere" (never sent here, whole on another backend: left alone),
    or "" (nothing to do)."""
    spool = runs.open_run(settings.dir, run_id)
    state = runs.sync_state(spool, settings.endpoint)
    if state.elsewhere:
        return "elsewhere"
    if state.unsent > 0 or (args.resend_set_aside and state.set_aside > 0):
        return "send"
    pending_copies = any(a["state"] == "pending" for a in artifacts_of(spool.dir))
    return "send" if pending_copies or unsent_count(spool, state.backend) > 0 else ""


def _sync_one(settings: Settings, run_id: str, args: argparse.Namespace) -> bool:
    """Sync one run; False when the backend refused lines of it (set aside)."""
    spool = runs.open_run(settings.dir, run_id)
    finish_pending(spool.dir)  # artifact copies a stop() or a kill -9 cut short
    total = runs.unsent_lines(spool, settings.endpoint)
    bar = None
    if sys.stderr.isatty():  # a progress bar on a terminal; nothing in a pipe or a log
        size = runs.unsent_bytes(spool, settings.endpoint)
        bar = ProgressBar(run_id[:8], size, total, sys.stderr)

    def show(progress: Progress) -> None:
        if bar is not None:
            bar.update(progress.sent_bytes, progress.sent_lines)

    try:
        done = runs.sync_run(
            spool,
            settings,
            timeout=args.timeout,
            progress=show,
            resend_set_aside=args.resend_set_aside,
        )
    finally:
        if bar is not None:
            bar.close()
    print(
        f"{run_id}: synced ({done.sent_lines} batches sent, {total} were pending) "
        f"to {redact_url(settings.endpoint)}"
    )
    if done.artifact_bytes:
        print(f"{run_id}: {done.artifact_bytes} bytes of artifacts uploaded")
    if args.resend_set_aside:
        print(f"{run_id}: {done.resent} set-aside batches stored on resending")
    if done.still_set_aside:
        print(
            f"{run_id}: {done.still_set_aside} batches refused by the backend are set "
            f"aside; `mkv show {run_id}` says why"
        )
    return not done.still_set_aside


def _artifact_source(args: argparse.Namespace) -> tuple[str | Path, str]:
    """Where `mkv artifacts` / `mkv get` read: the backend named by --endpoint, else the run dir."""
    settings = _settings(args)
    if args.endpoint:
        return settings.endpoint, check_run_id(args.run_id)
    return settings.dir, runs.resolve_run_id(settings.dir, args.run_id)


def cmd_artifacts(args: argparse.Namespace) -> int:
    from markov_otel import read

    source, run_id = _artifact_source(args)
    found = read.artifacts(run_id, source=source)
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return 0
    for entry in found:
        digest = str(entry.get("digest") or "")[:19]
        size = entry.get("size")
        state = entry.get("state", "uploaded")
        print(
            f"{entry['name']:32} {entry['kind']:10} {'' if size is None else size:>12} "
            f"{digest:19} {state}"
        )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from markov_otel import read

    source, run_id = _artifact_source(args)
    size = read.download(run_id, args.name, args.output, source=source)
    print(f"wrote {args.name} of {run_id} to {args.output} ({size} bytes)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from markov_otel import read
    from markov_otel.cli import export

    settings = _settings(args)
    source: str | Path = settings.endpoint if args.endpoint else settings.dir
    run_id = read.resolve_id(args.run_id, source=source)
    if args.distributions or args.texts:
        return _export_rows(args, run_id, source)
    points = read.points(run_id, source=source)
    if args.output:
        count = export.write_file(points, args.format, Path(args.output))
        print(f"wrote {count} points of {run_id} to {args.output}", file=sys.stderr)
    else:
        export.write_stream(points, args.format, sys.stdout)
    return 0


def _export_rows(args: argparse.Namespace, run_id: str, source: str | Path) -> int:
    """`mkv export --distributions KEY` / `--texts KEY`: one row per recorded array or text."""
    from markov_otel import read
    from markov_otel.cli import export

    if args.distributions:
        rows = export.distribution_rows(
            read.distributions(run_id, args.distributions, source=source)
        )
    else:
        rows = export.text_rows(read.texts(run_id, args.texts, source=source))
    if args.output:
        count = export.write_rows_file(rows, args.format, Path(args.output))
        print(f"wrote {count} rows of {run_id} to {args.output}", file=sys.stderr)
    else:
        export.write_rows_stream(rows, args.format, sys.stdout)
    return 0


def cmd_manage(args: argparse.Namespace) -> int:
    """`mkv tag/note/archive/rm RUN`: one change to a run on the backend."""
    from markov_otel import read
    from markov_otel.shipping.transport import BackendClient, Refused, Retry, Target

    settings = _settings(args)
    where = redact_url(settings.endpoint)
    run_id = read.resolve_id(args.run_id, source=settings.endpoint)
    path = f"/api/v1/recordings/{run_id}"
    client = BackendClient(Target.markov(settings), 30.0)
    try:
        if args.command == "rm":
            if not args.yes and not _confirmed(f"delete {run_id} and all its points on {where}?"):
                print("not deleted")
                return 1
            client.call("DELETE", path)
            print(f"deleted {run_id} on {where}")
            return 0
        if args.command == "tag":
            have = list(client.call("GET", path).get("tags") or [])
            tags = [t for t in have if t not in args.tags] if args.remove else have + args.tags
            body: dict[str, Any] = {"tags": list(dict.fromkeys(tags))}
        elif args.command == "note":
            body = {"notes": args.text}
        else:
            body = {"archived": not args.undo}
        found = client.call("PATCH", path, json=body)
    except (Refused, Retry) as exc:
        raise ConfigError(f"{where} did not take the change to {run_id}: {exc}") from exc
    finally:
        client.close()
    if args.command == "tag":
        print(f"{run_id} tags: {' '.join(found.get('tags') or []) or '(none)'}")
    elif args.command == "note":
        print(f"{run_id} notes set on {where}")
    else:
        print(f"{run_id} {'unarchived' if args.undo else 'archived'} on {where}")
    return 0


def _confirmed(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} Not on a terminal: pass --yes to delete")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_env(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_id = check_run_id(args.run_id)
    try:
        run_id = runs.resolve_run_id(settings.dir, run_id)
    except ConfigError:
        if any(r.startswith(run_id) for r in runs.run_ids(settings.dir)):
            raise  # ambiguous here; not found locally: the backend may have it
    env = _recorded_environment(settings, run_id)
    if args.what == "requirements":
        if not args.path:  # to stdout: `mkv env requirements RUN > requirements.txt`
            print(capture.requirements_text(env, recording_id=run_id), end="")
            return 0
        path = capture.write_requirements_file(env, args.path, recording_id=run_id)
        print(f"wrote {path}")
    elif args.what == "venv":
        report = rebuild.create_virtualenv(env, args.path or f"{run_id}_venv", progress=print)
        print(report.message)
    else:
        path = rebuild.create_conda_environment(
            env, args.path or f"{run_id}_conda_env", progress=print
        )
        print(f"created conda environment at {path}")
    return 0


def _recorded_environment(settings: Settings, run_id: str) -> dict[str, Any]:
    """environment.json of a local run, else the backend's copy."""
    local = Path(settings.dir) / check_run_id(run_id) / "environment.json"
    env = read_json(local) if local.is_file() else {}
    if env:
        return env
    from markov_otel.shipping.transport import BackendClient, Refused, Retry, Target

    client = BackendClient(Target.markov(settings), 30.0)
    try:
        found = client.call("GET", f"/api/v1/recordings/{check_run_id(run_id)}/requirements")
    except (Refused, Retry) as exc:
        raise ConfigError(
            f"no environment for {run_id!r} locally ({local}) or on "
            f"{redact_url(settings.endpoint)}: {exc}"
        ) from exc
    finally:
        client.close()
    if not isinstance(found, dict) or not found:
        raise ConfigError(f"recording {run_id!r} has no captured environment")
    return found


if __name__ == "__main__":
    sys.exit(main())
