"""Capture of the running environment and the files that rebuild it.

`capture()` returns the environment.json content: the interpreter, the platform, every installed
distribution with a pip-installable requirement line (PEP 610 direct URLs included) and the git
state of the working directory. `requirements_text()` and `conda_environment_text()` turn it into
requirements.txt and environment.yml. Building environments from it lives in `rebuild.py`.

Everything here is a pure function of plain data (plus the files and processes it names); nothing
runs at import.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from markov_otel.errors import ConfigError

__all__ = [
    "ENVIRONMENT_SCHEMA",
    "GIT_TIMEOUT_S",
    "capture",
    "conda_environment_text",
    "packages_of",
    "python_minor",
    "reinstall_problem",
    "requirement_lines",
    "requirements_text",
    "resolve_file_target",
    "write_conda_environment_file",
    "write_requirements_file",
]

ENVIRONMENT_SCHEMA = 1
"""Version of the environment.json layout that `capture()` writes."""

GIT_TIMEOUT_S = 2.0
"""How long a git query may take before the git state is recorded as unknown (None)."""

_NAME_RE = re.compile(r"^Name:[ \t]*(.+)$", re.MULTILINE)
_VERSION_RE = re.compile(r"^Version:[ \t]*(.+)$", re.MULTILINE)
# pip freeze leaves pip out too: the new environment brings its own.
_NOT_REQUIRED = frozenset({"pip"})


# --- capture ---------------------------------------------------------------------------------


def capture(cwd: Path | None = None) -> dict[str, Any]:
    """Return the environment.json content for this interpreter and the checkout at `cwd`."""
    if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
        raise ConfigError(f"cwd={cwd!r} must be a path, e.g. capture(Path.cwd())")
    where = Path(cwd) if cwd is not None else Path.cwd()
    git = _start_git(where)  # runs while the distributions are read
    return {
        "schema": ENVIRONMENT_SCHEMA,
        "captured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": sys.implementation.name,
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "release": platform.release(),
        },
        "packages": _installed_packages(),
        "git": _finish_git(git),
    }


def _installed_packages() -> list[dict[str, Any]]:
    """Every distribution on sys.path, first one wins per name (as import sees them), sorted."""
    seen: dict[str, dict[str, Any]] = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_version(dist)
        if not name or not version or _canonical(name) in seen:
            continue
        seen[_canonical(name)] = _package_entry(name, version, _direct_url(dist))
    return [seen[key] for key in sorted(seen)]


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """Name and Version from the metadata headers (the email parser took ~45 ms for 140 dists)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    header = text.partition("\n\n")[0]
    name, version = _NAME_RE.search(header), _VERSION_RE.search(header)
    return (name.group(1).strip() if name else None, version.group(1).strip() if version else None)


def _direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    """The PEP 610 direct_url.json of a distribution, or None for an index install."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None


def _package_entry(name: str, version: str, direct: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of environment.json's packages list."""
    if direct is not None:
        direct = {**direct, "url": _redact_url(direct["url"])}
    line, editable = _requirement_line(name, version, direct)
    return {
        "name": name,
        "version": version,
        "requirement": line,
        "editable": editable,
        "direct_url": direct,
    }


def _requirement_line(name: str, version: str, direct: dict[str, Any] | None) -> tuple[str, bool]:
    """The line pip reinstalls this distribution from, and whether it is editable."""
    if direct is None:
        return f"{name}=={version}", False
    url = direct["url"]
    vcs = direct.get("vcs_info")
    dir_info = direct.get("dir_info") or {}
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        url = f"{vcs.get('vcs', 'git')}+{url}" + (f"@{commit}" if commit else "")
    if direct.get("subdirectory"):
        url += f"#subdirectory={direct['subdirectory']}"
    if dir_info.get("editable"):
        local = _local_path(direct["url"])
        return f"-e {local if local is not None else url}", True
    return f"{name} @ {url}", False


def _redact_url(url: str) -> str:
    """Drop credentials from a URL; ssh user names and ${VAR} placeholders (PEP 610) stay."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    if userinfo.startswith("${"):
        return url
    if parts.scheme.endswith("ssh"):
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
    return urlunsplit(parts._replace(netloc=host))


def _local_path(url: str) -> str | None:
    """The filesystem path of a file:// URL, else None."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return unquote(parts.path)


def _canonical(name: str) -> str:
    """The PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- git ------------------------------------------------------------------------------------


def _start_git(cwd: Path) -> tuple[subprocess.Popen[str], subprocess.Popen[str]] | None:
    """Start the two git queries in parallel; None when git is not installed."""
    # GIT_OPTIONAL_LOCKS=0: a status refresh must never take index.lock from the user's git.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    status = ["status", "--porcelain=v2", "--branch", "--untracked-files=no"]
    remotes = ["config", "--get-regexp", r"^remote\..*\.url$"]
    try:
        return (_popen_git(cwd, status, env), _popen_git(cwd, remotes, env))
    except OSError:
        return None


def _popen_git(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["git", "-C", str(cwd), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _finish_git(
    procs: tuple[subprocess.Popen[str], subprocess.Popen[str]] | None,
) -> dict[str, Any] | None:
    """The git state from the started queries, or None (not a checkout, no git, too slow).

    `dirty` means tracked files differ from the commit, as in `git describe --dirty`: untracked
    files (run dirs, data, outputs) would mark every run dirty and make status slow.
    """
    if procs is None:
        return None
    status, remotes = (_output(proc) for proc in procs)
    if status is None:
        return None
    state = _parse_status(status)
    state["remote_url"] = _pick_remote(remotes or "")
    return state


def _output(proc: subprocess.Popen[str]) -> str | None:
    """stdout of a finished git query; None when it failed or ran past GIT_TIMEOUT_S."""
    try:
        out, _ = proc.communicate(timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out if proc.returncode == 0 else None


def _parse_status(text: str) -> dict[str, Any]:
    """commit, branch and dirty flag from `git status --porcelain=v2 --branch`."""
    commit = branch = None
    dirty = False
    for line in text.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split(" ", 2)[2]
        elif line.startswith("# branch.head "):
            branch = line.split(" ", 2)[2]
        elif line and not line.startswith("#"):
            dirty = True
    return {
        "commit": None if commit == "(initial)" else commit,
        "branch": None if branch == "(detached)" else branch,
        "dirty": dirty,
    }


def _pick_remote(text: str) -> str | None:
    """origin's URL if there is one, else the first remote's; credentials removed."""
    urls = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    url = urls.get("remote.origin.url") or next(iter(urls.values()), None)
    return _redact_url(url) if url else None


# --- requirements.txt -----------------------------------------------------------------------


def packages_of(env: object) -> list[dict[str, Any]]:
    """The packages list of an environment dict, checked; ConfigError when it is not one."""
    fix = "pass the dict capture() returns, or environment.json loaded with json.load"
    if not isinstance(env, Mapping):
        raise ConfigError(f"env={type(env).__name__} is not an environment dict; {fix}")
    packages = env.get("packages")
    if not isinstance(packages, list):
        raise ConfigError(f"env has no 'packages' list (got {packages!r}); {fix}")
    for pkg in packages:
        if not isinstance(pkg, Mapping) or not (
            isinstance(pkg.get("requirement"), str) or isinstance(pkg.get("name"), str)
        ):
            raise ConfigError(f"package entry {pkg!r} needs 'requirement' or 'name'; {fix}")
    return [dict(pkg) for pkg in packages]


def requirement_lines(env: object) -> list[tuple[dict[str, Any], str]]:
    """(package, requirement line) for every package pip should install, sorted by name."""
    pairs = []
    for pkg in packages_of(env):
        line = pkg.get("requirement") or _line_of(pkg)
        if _canonical(str(pkg.get("name") or line)) not in _NOT_REQUIRED:
            pairs.append((pkg, line))
    return sorted(pairs, key=lambda pair: _canonical(str(pair[0].get("name") or pair[1])))


def _line_of(pkg: Mapping[str, Any]) -> str:
    """A requirement line for a hand-written entry that has a name but no 'requirement'."""
    version = pkg.get("version")
    return f"{pkg['name']}=={version}" if version else str(pkg["name"])


def requirements_text(env: Mapping[str, Any], *, recording_id: str | None = None) -> str:
    """requirements.txt content: a header comment, then pip-freeze lines sorted by name.

    `recording_id` (keyword-only) names the recording in the header; default env["recording_id"].
    """
    lines = [line for _, line in requirement_lines(env)]
    return "".join(f"{line}\n" for line in [*_header(env, recording_id), *lines])


def _header(env: Mapping[str, Any], recording_id: str | None) -> list[str]:
    """Comment lines naming the recording, the interpreter, the platform and the checkout."""
    py = env.get("python") or {}
    plat = env.get("platform") or {}
    rec = recording_id or env.get("recording_id") or "(unnamed)"
    header = [
        f"# Environment of recording {rec}, captured {env.get('captured_at', '(unknown time)')}",
        f"# Python {py.get('version', '?')} ({py.get('implementation', '?')}) on "
        f"{plat.get('system', '?')} {plat.get('machine', '?')}",
    ]
    git = env.get("git")
    if isinstance(git, Mapping) and git.get("commit"):
        dirty = " with uncommitted changes" if git.get("dirty") else ""
        header.append(
            f"# git {git['commit']} on {git.get('branch') or '(detached)'}{dirty}"
            f" {git.get('remote_url') or ''}".rstrip()
        )
    header.append("# Reinstall: python -m pip install --no-deps -r requirements.txt")
    return header


def reinstall_problem(pkg: Mapping[str, Any], line: str) -> str | None:
    """Why pip cannot reinstall this package as recorded (a local path is gone), else None."""
    direct = pkg.get("direct_url")
    url = direct.get("url") if isinstance(direct, Mapping) else None
    local = _local_path(url) if isinstance(url, str) else None
    if local is None and line.startswith("-e "):
        local = line[3:].strip()
        local = None if "://" in local or local.startswith("git+") else local
    if local is not None and not Path(local).exists():
        return f"local path {local} no longer exists"
    return None


def resolve_file_target(path: object, filename: str) -> Path:
    """The file to write: `path` itself, or `path/filename` when `path` names a directory.

    A directory is an existing one, a path ending in a separator, or a missing path without a
    suffix (MarkovML's API takes the location of the file).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(f"path={path!r} must be a file or directory path, e.g. './env'")
    raw = os.fspath(path)
    target = Path(raw).expanduser()
    ends_in_sep = isinstance(raw, str) and raw.endswith(("/", os.sep))
    if ends_in_sep or target.is_dir() or (not target.exists() and not target.suffix):
        return target / filename
    return target


def write_requirements_file(
    env: Mapping[str, Any], path: str | Path, *, recording_id: str | None = None
) -> Path:
    """Write requirements.txt at `path` (a directory gets requirements.txt inside); return it."""
    text = requirements_text(env, recording_id=recording_id)
    return _write_atomically(resolve_file_target(path, "requirements.txt"), text)


def _write_atomically(target: Path, text: str) -> Path:
    """Create the parents, write a sibling temp file and rename it over `target`."""
    if target.is_dir():
        raise ConfigError(f"{target} is a directory; name a file or a directory to write into")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


# --- environment.yml ------------------------------------------------------------------------


def python_minor(env: Mapping[str, Any]) -> str:
    """The recorded Python's X.Y; this interpreter's when the recording has none."""
    py = env.get("python")
    version = py.get("version") if isinstance(py, Mapping) else None
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+", version):
        version = platform.python_version()
    return ".".join(version.split(".")[:2])


def conda_environment_text(env: Mapping[str, Any], *, name: str | None = None) -> str:
    """environment.yml content: python=X.Y and pip from conda-forge, the rest under `pip:`.

    Packages pip cannot reinstall (a local path that is gone) are listed as comments, since one
    failing pip line makes conda abandon the whole environment.
    """
    pairs = requirement_lines(env)
    env_name = name or env.get("recording_id") or "markov-experiment"
    out = [
        f"# Environment of recording {env_name}, captured {env.get('captured_at', '?')}",
        f"name: {json.dumps(str(env_name))}",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={python_minor(env)}",
        "  - pip",
        "  - pip:",
    ]
    for pkg, line in pairs:
        problem = reinstall_problem(pkg, line)
        out.append(f"      # skipped {line}: {problem}" if problem else _yaml_item(line))
    return "".join(f"{line}\n" for line in out)


def _yaml_item(line: str) -> str:
    """A pip: list item; a JSON string is a valid YAML double-quoted scalar."""
    return f"      - {json.dumps(line)}"


def write_conda_environment_file(
    env: Mapping[str, Any], path: str | Path, *, name: str | None = None
) -> Path:
    """Write environment.yml at `path` (a directory gets environment.yml inside); return it."""
    text = conda_environment_text(env, name=name)
    return _write_atomically(resolve_file_target(path, "environment.yml"), text)
