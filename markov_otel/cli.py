"""`mkv`: mode, config, runs, show, sync, serve, env. Our errors become one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markov_otel import environment, rebuild, runs
from markov_otel.config import (
    ENV_MODE,
    FILE_KEYS,
    RecordingMode,
    Settings,
    config_path,
    read_config_file,
    redact_url,
    write_config_value,
)
from markov_otel.errors import ConfigError, MarkovError
from markov_otel.sender import Progress
from markov_otel.spool import check_run_id, read_json


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkv", description="markov_otel experiment recorder")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    mode = sub.add_parser("mode", help="show or set the default recording mode")
    mode.add_argument("mode", nargs="?", choices=[m.value for m in RecordingMode])
    mode.set_defaults(run=cmd_mode)

    config = sub.add_parser("config", help="get or set a setting in the config file")
    config.add_argument("action", choices=["get", "set", "unset", "path"])
    config.add_argument("key", nargs="?", choices=list(FILE_KEYS))
    config.add_argument("value", nargs="?")
    config.set_defaults(run=cmd_config)

    listing = sub.add_parser("runs", help="list local runs")
    listing.add_argument("--dir", help="runs directory (default: MARKOV_DIR or ./markov-runs)")
    listing.set_defaults(run=cmd_runs)

    show = sub.add_parser("show", help="show one local run")
    show.add_argument("run_id")
    show.add_argument("--dir")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=cmd_show)

    sync = sub.add_parser("sync", help="upload offline runs and whatever an online run left")
    sync.add_argument("run_ids", nargs="*", metavar="RUN_ID")
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
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8470)
    serve.add_argument(
        "--db",
        default="sqlite:///markov-server.db",
        help="sqlite:///path (default) or postgresql://user@host/db",
    )
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted bearer token, TOKEN or TOKEN:PROJECT_ID (repeatable); "
        "also MARKOV_SERVER_TOKENS",
    )
    serve.add_argument("--port-file", help=argparse.SUPPRESS)
    serve.add_argument("--public-url", help="base of experiment_url links")
    serve.set_defaults(run=cmd_serve)

    env = sub.add_parser("env", help="rebuild a run's environment")
    env.add_argument("what", choices=["requirements", "venv", "conda"])
    env.add_argument("run_id")
    env.add_argument("path", nargs="?")
    env.add_argument("--dir")
    env.add_argument("--endpoint")
    env.set_defaults(run=cmd_env)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.resolve(
        {"dir": getattr(args, "dir", None), "endpoint": getattr(args, "endpoint", None)}
    )


def cmd_mode(args: argparse.Namespace) -> int:
    if args.mode:
        path = write_config_value("mode", args.mode)
        print(f"recording mode: {args.mode} (saved in {path})")
        if os.environ.get(ENV_MODE):
            print(f"note: {ENV_MODE}={os.environ[ENV_MODE]} overrides it in this shell")
        return 0
    print(Settings.resolve().mode.value)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "path":
        print(config_path())
        return 0
    if not args.key:
        raise ConfigError(f"`mkv config {args.action}` needs a KEY: {', '.join(FILE_KEYS)}")
    if args.action == "set":
        if args.value is None:
            raise ConfigError(f"`mkv config set {args.key}` needs a VALUE")
        write_config_value(args.key, args.value)
    elif args.action == "unset":
        write_config_value(args.key, None)
    else:
        value = read_config_file().get(args.key)
        if value is None:
            return 1
        print("<set>" if args.key == "api_key" else value)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    settings = _settings(args)
    base = settings.dir
    ids = runs.run_ids(base)
    if not ids:
        print(f"no runs in {base}")
        return 0
    print(f"{'RECORDING ID':34} {'NAME':24} {'STATUS':9} {'POINTS':>9}  SYNCED")
    for run_id in ids:
        spool = runs.open_run(base, run_id)
        info = spool.read_recording()
        synced = "yes" if runs.unsent_lines(spool, settings.endpoint) == 0 else "no"
        refused = len(runs.set_aside(spool, settings.endpoint))
        if refused:
            synced += f" ({refused} refused)"
        print(
            f"{run_id:34} {str(info.get('name'))[:24]:24} {runs.status_of(info):9} "
            f"{runs.point_count(spool, info):>9}  {synced}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    spool = runs.open_run(settings.dir, args.run_id)
    info = spool.read_recording()
    info["points"] = runs.point_count(spool, info)
    info["status"] = runs.status_of(info)
    info["unsent_lines"] = runs.unsent_lines(spool, settings.endpoint)
    info["set_aside"] = [vars(e) for e in runs.set_aside(spool, settings.endpoint)]
    info["run_dir"] = str(spool.dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for key in (
        "recording_id",
        "name",
        "project_id",
        "status",
        "model_class",
        "model_id",
        "notes",
        "points",
        "unsent_lines",
        "run_dir",
    ):
        print(f"{key:16} {info.get(key)}")
    for title in ("hyper_parameters", "summary", "last_values"):
        print(f"{title}:")
        for key, value in sorted((info.get(title) or {}).items()):
            print(f"  {key:24} {value}")
    print("alerts:")
    for alert in info.get("alerts", []):
        print(
            f"  step {alert.get('step')}: {alert.get('text')} "
            f"({alert.get('metric_name')}={alert.get('value')})"
        )
    aside = runs.set_aside(spool, settings.endpoint)
    if aside:
        print(
            f"set aside (refused by {redact_url(settings.endpoint)}; resend with "
            f"`mkv sync {args.run_id} --resend-set-aside` once the cause is fixed):"
        )
        for entry in aside:
            print(f"  {entry.signal}.jsonl line {entry.line}: {entry.reason}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ids = list(args.run_ids)
    if args.all:
        ids += [r for r in runs.run_ids(settings.dir) if r not in ids]
    if not ids:
        raise ConfigError("name the runs to sync (mkv sync RUN_ID …) or pass --all")
    refused = 0
    for run_id in ids:
        spool = runs.open_run(settings.dir, run_id)
        total = runs.unsent_lines(spool, settings.endpoint)

        def show(progress: Progress, run_id: str = run_id, total: int = total) -> None:
            if sys.stderr.isatty():
                print(f"\r{run_id}: {progress.sent_lines}/{total} batches", end="", file=sys.stderr)

        done = runs.sync_run(
            spool,
            settings,
            timeout=args.timeout,
            progress=show,
            resend_set_aside=args.resend_set_aside,
        )
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(
            f"{run_id}: synced ({done.sent_lines} batches sent, {total} were pending) "
            f"to {redact_url(settings.endpoint)}"
        )
        if args.resend_set_aside:
            print(f"{run_id}: {done.resent} set-aside batches stored on resending")
        if done.still_set_aside:
            refused += 1
            print(
                f"{run_id}: {done.still_set_aside} batches refused by the backend are set "
                f"aside; `mkv show {run_id}` says why"
            )
    return 1 if refused else 0  # a script must notice data the backend does not have


def cmd_serve(args: argparse.Namespace) -> int:
    from markov_otel.server import serve

    print(f"mkv serve: http://{args.host}:{args.port} (db {args.db})", file=sys.stderr)
    serve(  # serve() adds the tokens in MARKOV_SERVER_TOKENS
        host=args.host,
        port=args.port,
        db=args.db,
        tokens=args.token,
        port_file=args.port_file,
        public_url=args.public_url,
    )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = _recorded_environment(settings, args.run_id)
    if args.what == "requirements":
        target = args.path or "requirements.txt"
        path = environment.write_requirements_file(env, target, recording_id=args.run_id)
        print(f"wrote {path}")
    elif args.what == "venv":
        report = rebuild.create_virtualenv(env, args.path or f"{args.run_id}_venv", progress=print)
        print(report.message)
    else:
        path = rebuild.create_conda_environment(
            env, args.path or f"{args.run_id}_conda_env", progress=print
        )
        print(f"created conda environment at {path}")
    return 0


def _recorded_environment(settings: Settings, run_id: str) -> dict[str, Any]:
    """environment.json of a local run, else the backend's copy."""
    local = Path(settings.dir) / check_run_id(run_id) / "environment.json"
    env = read_json(local) if local.is_file() else {}
    if env:
        return env
    from markov_otel.transport import BackendClient, Refused, Retry, Target

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
