"""Rebuilding a recorded environment: a virtualenv with pip, or a conda environment.

Both take the environment dict that `capture.capture()` returns (environment.json). A package
pip cannot reinstall is skipped and reported once in `VenvReport.message` while the rest installs:
pip runs once for everything; when it refuses, the package its error names is set aside and it
runs again, and when no package is named it falls back to one pip run per package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markov_otel.environments.capture import (
    python_minor,
    reinstall_problem,
    requirement_lines,
    write_conda_environment_file,
)
from markov_otel.errors import ConfigError, MarkovError

__all__ = [
    "CONDA_TOOLS",
    "SkippedPackage",
    "VenvReport",
    "conda_command",
    "create_conda_environment",
    "create_virtualenv",
    "find_conda",
]

CONDA_TOOLS = ("conda", "mamba", "micromamba")
"""Conda front ends tried on PATH, in order, after $CONDA_EXE and $MAMBA_EXE."""

# Rounds of "drop the package pip named and run again" before falling back to one run each.
_MAX_BULK_ROUNDS = 5
# pip lines worth showing as progress: one per package, then the summary.
_PROGRESS_PREFIXES = ("Collecting ", "Processing ", "Obtaining ", "Successfully installed")
_PIP_FLAGS = ("--no-deps", "--disable-pip-version-check", "--no-input", "--progress-bar", "off")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SkippedPackage:
    """A recorded package that was not reinstalled, and why."""

    name: str
    requirement: str
    reason: str


@dataclass
class VenvReport:
    """What `create_virtualenv` built: where, with which interpreter, what went in, what not."""

    path: Path
    python: Path
    python_version: str
    installed: list[str] = field(default_factory=list)
    skipped: list[SkippedPackage] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class _Planned:
    name: str
    line: str


# --- virtualenv -----------------------------------------------------------------------------


def create_virtualenv(
    env: Mapping[str, Any],
    path: str | Path,
    *,
    progress: Progress | None = None,
    python: str | None = None,
) -> VenvReport:
    """Create a virtualenv at `path`, pip-install the recorded packages, verify the interpreter.

    `python` (keyword-only) is the interpreter that creates it (default: this one); `progress`
    receives one line per step and per package.
    """
    say = progress or _quiet
    plan, skipped = _plan(env)
    target = _venv_target(path)
    say(f"Creating virtualenv at {target}")
    venv_python = _make_venv(target, python)
    installed, refused = _install(venv_python, plan, say)
    version = _verify(venv_python)
    report = VenvReport(target, venv_python, version, installed, [*skipped, *refused])
    report.message = _summary(report, env)
    return report


def _quiet(_: str) -> None:
    return None


def _plan(env: Mapping[str, Any]) -> tuple[list[_Planned], list[SkippedPackage]]:
    """Split the recorded packages into those to install and those known not to reinstall."""
    plan, skipped = [], []
    for pkg, line in requirement_lines(env):
        name = str(pkg.get("name") or line)
        problem = reinstall_problem(pkg, line)
        if problem:
            skipped.append(SkippedPackage(name, line, problem))
        else:
            plan.append(_Planned(name, line))
    return plan, skipped


def _venv_target(path: object) -> Path:
    """The venv directory; ConfigError when it is a file or a non-empty non-venv directory."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(
            f"path={path!r} must be a directory path for the virtualenv, e.g. './env'"
        )
    target = Path(os.fspath(path)).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; name a new directory for the virtualenv")
    if target.is_dir() and any(target.iterdir()) and not (target / "pyvenv.cfg").exists():
        raise ConfigError(f"{target} is not empty and not a virtualenv; name a new directory")
    return target


def _bin(venv: Path, program: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return venv / scripts / (f"{program}.exe" if os.name == "nt" else program)


def _child_env() -> dict[str, str]:
    """This process's environment minus what would make the new interpreter see our packages."""
    # With PYTHONPATH inherited, the venv's pip finds our packages "already satisfied".
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _make_venv(target: Path, python: str | None) -> Path:
    """Run `python -m venv` (with pip) and return the new interpreter."""
    creator = python or sys.executable
    if shutil.which(creator) is None:
        raise ConfigError(f"python={creator!r} was not found; name an interpreter, e.g. 'python3'")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [creator, "-m", "venv", str(target)],
        capture_output=True,
        text=True,
        check=False,
        env=_child_env(),
    )
    if done.returncode != 0:
        reason = _last_error(done.stdout + done.stderr)
        raise MarkovError(f"`{creator} -m venv {target}` failed: {reason}")
    return _bin(target, "python")


def _install(
    venv_python: Path, plan: list[_Planned], say: Progress
) -> tuple[list[str], list[SkippedPackage]]:
    """Install the plan in bulk, setting aside what pip names; one run each if it names none."""
    remaining, refused = list(plan), list[SkippedPackage]()
    for _ in range(_MAX_BULK_ROUNDS):
        if not remaining:
            return [], refused
        ok, output = _pip_install(venv_python, [p.line for p in remaining], say)
        if ok:
            return [p.line for p in remaining], refused
        culprit, reason = _culprit(output, remaining)
        if culprit is None:
            break
        say(f"Skipping {culprit.line}: {reason}")
        refused.append(SkippedPackage(culprit.name, culprit.line, reason))
        remaining.remove(culprit)
    say("Installing one package at a time to find what pip refuses")
    installed, more = _install_each(venv_python, remaining, say)
    return installed, refused + more


def _install_each(
    venv_python: Path, plan: list[_Planned], say: Progress
) -> tuple[list[str], list[SkippedPackage]]:
    """One pip run per package; gives up on the rest when pip keeps failing for another reason."""
    installed, refused = list[str](), list[SkippedPackage]()
    for index, item in enumerate(plan):
        if _same_failure_thrice(refused):
            # e.g. the index is unreachable: each further run would wait out pip's retries too.
            reason = f"not tried: {refused[-1].reason}"
            return installed, refused + [
                SkippedPackage(p.name, p.line, reason) for p in plan[index:]
            ]
        ok, output = _pip_install(venv_python, [item.line], say)
        if ok:
            installed.append(item.line)
        else:
            refused.append(SkippedPackage(item.name, item.line, _last_error(output)))
    return installed, refused


def _same_failure_thrice(refused: list[SkippedPackage]) -> bool:
    """The last three failures share one reason that names none of them (not a package fault)."""
    last = refused[-3:]
    return (
        len(last) == 3
        and len({s.reason for s in last}) == 1
        and not any(_canonical(s.name) in _canonical(s.reason) for s in last)
    )


def _pip_install(venv_python: Path, lines: Sequence[str], say: Progress) -> tuple[bool, str]:
    """Run the venv's pip on a requirements file of `lines`; stream progress; keep the tail."""
    reqs = venv_python.parent.parent / "markov-requirements.txt"
    reqs.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    cmd = [str(venv_python), "-m", "pip", "install", *_PIP_FLAGS, "-r", str(reqs)]
    tail: deque[str] = deque(maxlen=200)
    with subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_child_env(),
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for raw in proc.stdout:
            line = raw.rstrip()
            tail.append(line)
            if line.startswith(_PROGRESS_PREFIXES):
                say(line.split(" (from -r ", 1)[0])
    reqs.unlink(missing_ok=True)
    return proc.returncode == 0, "\n".join(tail)


_SUBJECT_PATTERNS = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"ERROR: (\S+?\.whl) is not a supported wheel"),
    re.compile(r"Invalid requirement: '([^']+)'"),
    re.compile(r"No such file or directory: '([^']+)'"),
    re.compile(r"Failed building wheel for (\S+)"),
    re.compile(r"Could not build wheels for (\S+)"),
)


def _culprit(output: str, plan: list[_Planned]) -> tuple[_Planned | None, str]:
    """The planned package pip's error names, with that error line; (None, '') if none."""
    for pattern in _SUBJECT_PATTERNS:
        for match in pattern.finditer(output):
            found = _match_plan(match.group(1), plan)
            if found is not None:
                return found, _error_line(output, match)
    return None, ""


def _match_plan(subject: str, plan: list[_Planned]) -> _Planned | None:
    """The plan entry the error's subject names: by project name, else by path or URL."""
    wanted = _subject_name(subject)
    by_name = [item for item in plan if _canonical(item.name) == wanted]
    by_text = [item for item in plan if subject in item.line]
    return next(iter(by_name or by_text), None)


def _subject_name(subject: str) -> str:
    """The canonical project name at the start of a requirement or wheel file name."""
    if subject.endswith(".whl"):
        return _canonical(Path(subject).name.split("-")[0])
    head = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", subject)
    return _canonical(head.group(0)) if head else ""


def _error_line(output: str, match: re.Match[str]) -> str:
    start = output.rfind("\n", 0, match.start()) + 1
    end = output.find("\n", match.end())
    return _clean(output[start : end if end != -1 else len(output)])


def _last_error(output: str) -> str:
    """The last ERROR line of pip's output, else its last non-empty line."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return _clean((errors or lines or ["no output"])[-1])


def _clean(line: str) -> str:
    line = line.removeprefix("ERROR:").strip()
    return line if len(line) <= 200 else line[:197] + "..."


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _verify(venv_python: Path) -> str:
    """Run the new interpreter; its sys.version, or MarkovError when it does not start."""
    done = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=False,
        env=_child_env(),
    )
    if done.returncode != 0:
        reason = _last_error(done.stderr)
        raise MarkovError(f"the new interpreter {venv_python} does not run: {reason}")
    return done.stdout.strip()


def _summary(report: VenvReport, env: Mapping[str, Any]) -> str:
    """One message: where, what went in, what did not and why, how to use it."""
    total = len(report.installed) + len(report.skipped)
    lines = [
        f"Virtualenv at {report.path} (Python {report.python_version.split()[0]}): "
        f"{len(report.installed)} of {total} packages installed."
    ]
    if python_minor(env) != ".".join(report.python_version.split(".")[:2]):
        lines.append(
            f"It runs Python {report.python_version.split()[0]}, but the run used "
            f"{python_minor(env)}; create_experiment_conda_environment() builds that version."
        )
    if report.skipped:
        lines.append(f"{len(report.skipped)} could not be reinstalled:")
        lines += [f"  - {s.requirement}: {s.reason}" for s in report.skipped]
    lines.append(f"Activate it with: source {_bin(report.path, 'activate')}")
    return "\n".join(lines)


# --- conda ----------------------------------------------------------------------------------


def find_conda() -> str | None:
    """The conda front end: $CONDA_EXE, $MAMBA_EXE, then conda, mamba, micromamba on PATH."""
    for var in ("CONDA_EXE", "MAMBA_EXE"):
        exe = os.environ.get(var)
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    for tool in CONDA_TOOLS:
        found = shutil.which(tool)
        if found:
            return found
    return None


def conda_command(exe: str, prefix: Path, env_file: Path) -> list[str]:
    """The command that creates the environment at `prefix` from `env_file` with `exe`."""
    if "micromamba" in Path(exe).name:
        return [exe, "create", "--yes", "--prefix", str(prefix), "--file", str(env_file)]
    return [exe, "env", "create", "--prefix", str(prefix), "--file", str(env_file)]


def create_conda_environment(
    env: Mapping[str, Any], path: str | Path, *, progress: Progress | None = None
) -> Path:
    """Write `<path>.environment.yml` beside the target, create the environment at `path`.

    ConfigError, naming the file and the command, when no conda front end is installed;
    MarkovError when the tool fails. `progress` (keyword-only) receives the tool's output lines.
    """
    target = _conda_target(path)
    env_file = write_conda_environment_file(
        env, target.with_name(f"{target.name}.environment.yml"), name=target.name
    )
    exe = find_conda()
    if exe is None:
        cmd = " ".join(conda_command("conda", target, env_file))
        raise ConfigError(
            f"no conda, mamba or micromamba found ($CONDA_EXE, $MAMBA_EXE, PATH). The environment "
            f"file is at {env_file}; install one (e.g. Miniforge) and run: {cmd}"
        )
    _run_conda(conda_command(exe, target, env_file), progress or _quiet)
    return target


def _conda_target(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(
            f"path={path!r} must be a directory path for the environment, e.g. './env'"
        )
    target = Path(os.fspath(path)).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; name a new directory for the conda environment")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _run_conda(cmd: list[str], say: Progress) -> None:
    say("Running: " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=50)
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for raw in proc.stdout:
            tail.append(raw.rstrip())
            say(raw.rstrip())
    if proc.returncode != 0:
        reason = _last_error("\n".join(tail))
        raise MarkovError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {reason}")
