"""Settings resolution: explicit argument > environment > config file > default.

The config file is JSON, written by `mkv` with mode 0600 because it may hold the API key. Nothing
here runs at import time; `Settings.resolve()` reads the environment when a recorder is built,
and remembers where each value came from (`Settings.source(key)`), so that `mkv config list`
can say it and the recorder can tell a mode somebody chose from the default.

The default mode: ONLINE when an endpoint is configured (argument, environment or file), else
OFFLINE (there is no backend to send to: record locally, as MLflow's ./mlruns does, and say once
how to go online). A mode that is set (`recording_mode=`, MARKOV_MODE, `mkv mode`) is followed as
given: ONLINE with no endpoint configured sends to DEFAULT_ENDPOINT.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from markov_otel.errors import ConfigError

ENV_MODE = "MARKOV_MODE"
"""Recording mode when a recorder is built without `recording_mode`: online or offline."""
ENV_ENDPOINT = "MARKOV_ENDPOINT"
"""Base URL of the Markov backend, e.g. http://127.0.0.1:8470."""
ENV_API_KEY = "MARKOV_API_KEY"
"""Bearer token for the Markov backend. Never written to run dirs or logs."""
ENV_DIR = "MARKOV_DIR"
"""Directory holding one run dir per recording (default ./markov-runs)."""
ENV_CONFIG = "MARKOV_CONFIG"
"""Path of the config file (default: the user config dir's markov/config.json)."""
ENV_ALERT_COOLDOWN = "MARKOV_ALERT_COOLDOWN"
"""Seconds between two notifications (webhook, log warning) of one alert condition."""

DEFAULT_ENDPOINT = "http://127.0.0.1:8470"
DEFAULT_DIR = "markov-runs"
DEFAULT_ALERT_COOLDOWN = 60.0

EXPLICIT, ENV, FILE, DEFAULT = "explicit", "env", "file", "default"
"""Where a setting came from (`Settings.source`), strongest first."""

# Keys `mkv config set` accepts, with the environment variable that overrides each.
FILE_KEYS: dict[str, str | None] = {
    "mode": ENV_MODE,
    "endpoint": ENV_ENDPOINT,
    "api_key": ENV_API_KEY,
    "dir": ENV_DIR,
    "webhook_url": "MARKOV_WEBHOOK_URL",
    "ca_bundle": "MARKOV_CA_BUNDLE",
    "capture_environment": "MARKOV_CAPTURE_ENVIRONMENT",
    "otlp_endpoint": None,
    "prometheus_port": "MARKOV_PROMETHEUS_PORT",
    "export_points": "MARKOV_EXPORT_POINTS",
    "trace_children": "MARKOV_TRACE_CHILDREN",
    "system_metrics": "MARKOV_SYSTEM_METRICS",
    "system_metrics_interval": "MARKOV_SYSTEM_METRICS_INTERVAL",
    "ranks": "MARKOV_RANKS",
    "alert_cooldown": ENV_ALERT_COOLDOWN,
    "encoder_process": "MARKOV_ENCODER_PROCESS",
}


class RecordingMode(str, enum.Enum):
    """Where records go: ONLINE ships them to the backend, OFFLINE keeps them on disk."""

    ONLINE = "online"
    OFFLINE = "offline"

    @classmethod
    def parse(cls, value: object) -> RecordingMode:
        if isinstance(value, RecordingMode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(
                f"recording mode {value!r} is not 'online' or 'offline'; "
                "use RecordingMode.ONLINE / RecordingMode.OFFLINE or `mkv mode offline`"
            ) from None


def config_path() -> Path:
    """Where `mkv` keeps its settings: $MARKOV_CONFIG, else the user config dir."""
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "markov" / "config.json"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The saved settings; a missing file is empty, a corrupt one is a ConfigError."""
    path = path or config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; fix or delete it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object; fix or delete it")
    return data


def write_config_value(key: str, value: str | None, path: Path | None = None) -> Path:
    """Set (or, with None, remove) one key; the file is created 0600 and replaced atomically."""
    if key not in FILE_KEYS:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(FILE_KEYS)}")
    if key == "mode" and value is not None:
        value = RecordingMode.parse(value).value
    if value is not None:
        Settings()._with({key: value})  # a value resolve() would refuse is refused now
    path = path or config_path()
    data = read_config_file(path)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def redact_url(url: str) -> str:
    """`url` without the credentials a user may have put in it (`https://user:pw@host`), for
    files, logs and as the name of a backend's acknowledgements."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one recorder or CLI call. `repr` hides the API key."""

    mode: RecordingMode = RecordingMode.ONLINE
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = field(default=None, repr=False)
    dir: Path = Path(DEFAULT_DIR)
    webhook_url: str | None = None
    ca_bundle: str | None = None
    capture_environment: bool = True
    otlp_endpoint: str | None = None
    prometheus_port: int | None = None
    export_points: bool = False
    trace_children: bool = False
    system_metrics: bool = True
    system_metrics_interval: float = 10.0
    ranks: str = "0"
    alert_cooldown: float = DEFAULT_ALERT_COOLDOWN
    encoder_process: str = "auto"
    # Where each value came from (EXPLICIT, ENV, FILE); a key absent here is the default.
    # Not part of equality: two Settings with the same values are the same settings.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def source(self, key: str) -> str:
        """EXPLICIT, ENV, FILE or DEFAULT: where the value of `key` came from."""
        if key not in FILE_KEYS:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(FILE_KEYS)}")
        return self.sources.get(key, DEFAULT)

    @property
    def offline_by_default(self) -> bool:
        """OFFLINE only because neither a mode nor an endpoint is configured anywhere."""
        return (
            self.mode is RecordingMode.OFFLINE
            and self.source("mode") == DEFAULT
            and self.source("endpoint") == DEFAULT
        )

    def __repr__(self) -> str:
        key = "set" if self.api_key else "unset"
        return (
            f"Settings(mode={self.mode.value!r}, endpoint={self.endpoint!r}, api_key=<{key}>, "
            f"dir={str(self.dir)!r})"
        )

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Merge explicit overrides, the environment, the config file and the defaults."""
        raw: dict[str, Any] = dict(read_config_file())
        sources = dict.fromkeys(raw, FILE)
        for key, env in FILE_KEYS.items():
            if env and os.environ.get(env) not in (None, ""):
                raw[key], sources[key] = os.environ[env], ENV
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        raw.update(given)
        sources.update(dict.fromkeys(given, EXPLICIT))
        unknown = set(raw) - set(FILE_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {sorted(unknown)}; known: {', '.join(FILE_KEYS)}"
            )
        if "mode" not in raw and "endpoint" not in raw:
            raw["mode"] = RecordingMode.OFFLINE  # nowhere to send: record locally (see above)
        return replace(cls()._with(raw), sources=sources)

    def _with(self, raw: Mapping[str, Any]) -> Settings:
        values: dict[str, Any] = {}
        if "mode" in raw:
            values["mode"] = RecordingMode.parse(raw["mode"])
        for key in ("endpoint", "api_key", "webhook_url", "ca_bundle", "otlp_endpoint"):
            if key in raw:
                values[key] = str(raw[key])
        if "endpoint" in values:
            values["endpoint"] = values["endpoint"].rstrip("/")
        if "dir" in raw:
            values["dir"] = Path(str(raw["dir"])).expanduser()
        for key in ("capture_environment", "export_points", "trace_children", "system_metrics"):
            if key in raw:
                values[key] = _truthy(raw[key])
        if "prometheus_port" in raw:
            values["prometheus_port"] = _port(raw["prometheus_port"])
        if "system_metrics_interval" in raw:
            values["system_metrics_interval"] = _interval(raw["system_metrics_interval"])
        if "ranks" in raw:
            values["ranks"] = _ranks(raw["ranks"])
        if "alert_cooldown" in raw:
            values["alert_cooldown"] = cooldown_seconds(raw["alert_cooldown"], "alert_cooldown")
        if "encoder_process" in raw:
            values["encoder_process"] = _encoder_process(raw["encoder_process"])
        return replace(self, **values)


ENCODER_PROCESS_MODES = ("auto", "always", "never")


def _encoder_process(value: object) -> str:
    """When the flusher encodes in a process of its own (encoder_process.py)."""
    mode = str(value).strip().lower()
    if mode not in ENCODER_PROCESS_MODES:
        raise ConfigError(
            f"encoder_process={value!r} must be one of {', '.join(ENCODER_PROCESS_MODES)}: "
            "auto (once the flusher lags behind a tight loop), always, or never"
        )
    return mode


def cooldown_seconds(value: object, what: str = "cooldown") -> float:
    """Seconds between two notifications of one alert condition: a number >= 0 (0: no limit)."""
    try:
        seconds = float(str(value)) if not isinstance(value, bool) else -1.0
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(
            f"{what}={value!r} must be a number of seconds >= 0 (0: every crossing notifies), "
            f"e.g. {what}=60"
        )
    return seconds


def _port(value: object) -> int:
    try:
        port = int(str(value))
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        raise ConfigError(f"prometheus_port={value!r} must be a port number 0..65535")
    return port


MIN_SYSTEM_METRICS_INTERVAL = 0.1
"""Seconds; below it the sampler would cost more than its goal of 0.5% of a core."""


def _interval(value: object) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = -1.0
    if isinstance(value, bool) or not MIN_SYSTEM_METRICS_INTERVAL <= seconds < float("inf"):
        raise ConfigError(
            f"system_metrics_interval={value!r} must be a number of seconds of at least "
            f"{MIN_SYSTEM_METRICS_INTERVAL}, e.g. system_metrics_interval=10"
        )
    return seconds


def _ranks(value: object) -> str:
    text = str(value).strip().lower()
    if text not in ("0", "all"):
        raise ConfigError(
            f"ranks={value!r} must be '0' (only rank 0 records add_record values) or 'all' "
            "(every rank, each point tagged with its rank)"
        )
    return text
