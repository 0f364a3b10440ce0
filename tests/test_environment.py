"""Environment capture, requirements.txt, environment.yml, virtualenv and conda rebuilds."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from markov_otel.environments.capture import (
    capture,
    conda_environment_text,
    requirements_text,
    write_conda_environment_file,
    write_requirements_file,
)
from markov_otel.environments.rebuild import create_conda_environment, create_virtualenv, find_conda
from markov_otel.errors import ConfigError, MarkovError

GIT_ID = ["-c", "user.email=test@example.invalid", "-c", "user.name=Test"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_ID, "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_dist(site: Path, name: str, version: str, direct_url: dict[str, Any] | None) -> None:
    """A real installed distribution: a .dist-info with METADATA and maybe direct_url.json."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nA long description.\n"
    )
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


def small_env(**extra: Any) -> dict[str, Any]:
    packages = [
        {"name": "six", "version": "1.16.0", "requirement": "six==1.16.0"},
        {"name": "idna", "version": "3.7", "requirement": "idna==3.7"},
    ]
    return {
        "python": {"version": platform.python_version()},
        "captured_at": "2024-01-01T00:00:00+00:00",
        "packages": packages + extra.pop("more", []),
        **extra,
    }


def parse_environment_yml(text: str) -> dict[str, Any]:
    """A parser for exactly the environment.yml layout we write (no PyYAML dependency)."""
    result: dict[str, Any] = {"channels": [], "dependencies": [], "pip": [], "comments": []}
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            result["comments"].append(stripped)
        elif not line.startswith(" ") and ":" in line:
            key, _, value = line.partition(":")
            section = key
            if value.strip():
                result[key] = json.loads(value.strip())
        elif stripped == "- pip:":
            section = "pip"
        elif stripped.startswith("- "):
            item = stripped[2:]
            result[section or "?"].append(json.loads(item) if item.startswith('"') else item)
    return result


# --- capture ---------------------------------------------------------------------------------


def test_capture_lists_every_distribution_with_its_version() -> None:
    """Every distribution importlib.metadata sees is captured with the version import would use."""
    expected: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"]:
            expected.setdefault(canonical(dist.metadata["Name"]), dist.version)
    captured = {canonical(p["name"]): p["version"] for p in capture()["packages"]}
    assert captured == expected
    assert "pytest" in captured


def test_capture_describes_the_interpreter_and_is_json() -> None:
    """The interpreter and platform are recorded, and the whole dict survives a JSON round trip."""
    env = capture()
    assert json.loads(json.dumps(env, allow_nan=False)) == env
    assert env["python"] == {
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
    }
    assert env["platform"]["system"] == platform.system()
    assert env["platform"]["machine"] == platform.machine()
    assert env["captured_at"].endswith("+00:00")


def test_direct_url_installs_become_pip_installable_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VCS, archive and editable installs (PEP 610) turn into lines pip reinstalls from."""
    site = tmp_path / "site"
    commit = "0123456789abcdef0123456789abcdef01234567"
    vcs_url = {
        "url": "https://user:s3cret@github.com/o/vcspkg",
        "vcs_info": {"vcs": "git", "commit_id": commit},
    }
    make_dist(site, "vcspkg", "1.0", vcs_url)
    make_dist(site, "archpkg", "2.0", {"url": "file:///wheels/archpkg.tar.gz", "archive_info": {}})
    src = tmp_path / "src" / "editpkg"
    src.mkdir(parents=True)
    make_dist(site, "editpkg", "0.1", {"url": src.as_uri(), "dir_info": {"editable": True}})
    make_dist(site, "plainpkg", "3.0", None)
    monkeypatch.syspath_prepend(str(site))

    by_name = {p["name"]: p for p in capture(tmp_path)["packages"]}

    assert by_name["vcspkg"]["requirement"] == f"vcspkg @ git+https://github.com/o/vcspkg@{commit}"
    assert "s3cret" not in json.dumps(by_name["vcspkg"])
    assert by_name["archpkg"]["requirement"] == "archpkg @ file:///wheels/archpkg.tar.gz"
    assert by_name["editpkg"]["requirement"] == f"-e {src}"
    assert by_name["editpkg"]["editable"] is True
    assert by_name["plainpkg"]["requirement"] == "plainpkg==3.0"
    assert by_name["plainpkg"]["direct_url"] is None


def test_first_distribution_on_sys_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name installed twice is recorded once, with the version import would load."""
    make_dist(tmp_path / "a", "twicepkg", "2.0", None)
    make_dist(tmp_path / "b", "twicepkg", "1.0", None)
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    found = [p for p in capture(tmp_path)["packages"] if p["name"] == "twicepkg"]
    assert [p["version"] for p in found] == ["2.0"]


# --- git -------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    (repo / "train.py").write_text("print('train')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_git_state_of_a_clean_checkout(repo: Path) -> None:
    """A clean checkout records its commit, branch and dirty=False."""
    state = capture(repo)["git"]
    assert state == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": "trunk",
        "dirty": False,
        "remote_url": None,
    }


def test_git_state_of_a_dirty_checkout(repo: Path) -> None:
    """A modified tracked file marks the checkout dirty; an untracked file alone does not."""
    (repo / "notes.txt").write_text("untracked\n")
    assert capture(repo)["git"]["dirty"] is False
    (repo / "train.py").write_text("print('changed')\n")
    assert capture(repo)["git"]["dirty"] is True


def test_git_remote_url_loses_its_credentials(repo: Path) -> None:
    """The remote URL is recorded without the user:token part."""
    git(repo, "remote", "add", "origin", "https://bob:ghp_token@example.com/team/repo.git")
    assert capture(repo)["git"]["remote_url"] == "https://example.com/team/repo.git"


def test_git_detached_head_and_unborn_branch(repo: Path, tmp_path: Path) -> None:
    """A detached HEAD has no branch; a repository without commits has no commit."""
    git(repo, "checkout", "-q", "--detach")
    assert capture(repo)["git"]["branch"] is None
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    assert capture(empty)["git"] == {
        "commit": None,
        "branch": "main",
        "dirty": False,
        "remote_url": None,
    }


def test_no_checkout_or_no_git_means_no_git_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a checkout, and without a git binary, git is None and capture still works."""
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert capture(plain)["git"] is None
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    env = capture(plain)
    assert env["git"] is None
    assert env["packages"]


# --- requirements.txt ------------------------------------------------------------------------


def test_requirements_text_is_sorted_pip_freeze_with_a_header() -> None:
    """Lines are pip-freeze pins sorted by name (pip itself left out) under a comment header."""
    env = small_env(
        more=[{"name": "pip", "version": "24.0", "requirement": "pip==24.0"}],
        git={"commit": "abc123", "branch": "main", "dirty": True, "remote_url": None},
    )
    text = requirements_text(env, recording_id="rec-42")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    pins = [line for line in text.splitlines() if not line.startswith("#")]
    assert pins == ["idna==3.7", "six==1.16.0"]
    assert "rec-42" in comments[0]
    assert f"Python {platform.python_version()}" in comments[1]
    assert any("abc123" in c and "uncommitted" in c for c in comments)


@pytest.mark.slow
def test_requirements_file_pip_accepts(tmp_path: Path) -> None:
    """pip takes the written file of the real capture: a dry run with no index succeeds,
    because every line names what this very environment has installed."""
    path = write_requirements_file(capture(), tmp_path / "reqs.txt")
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps"]
    done = subprocess.run(
        [*pip, "--no-build-isolation", "--disable-pip-version-check", "-r", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Invalid requirement" not in done.stderr
    assert done.stdout.count("Requirement already satisfied") >= 10


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("out/new/", "out/new/requirements.txt"),
        ("out/new", "out/new/requirements.txt"),
        ("out/deeper/reqs.txt", "out/deeper/reqs.txt"),
        ("existing", "existing/requirements.txt"),
    ],
)
def test_write_requirements_file_targets(tmp_path: Path, given: str, expected: str) -> None:
    """A directory (existing, trailing separator, or no suffix) gets requirements.txt inside."""
    (tmp_path / "existing").mkdir()
    env = small_env()
    written = write_requirements_file(env, str(tmp_path / given) + ("/" * given.endswith("/")))
    assert written == tmp_path / expected
    assert written.read_text() == requirements_text(env)


def test_misuse_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A dict without packages, a non-path and a non-dict are ConfigErrors naming the value."""
    with pytest.raises(ConfigError, match="'packages'"):
        write_requirements_file({"python": {}}, tmp_path)
    with pytest.raises(ConfigError, match="path=42"):
        write_requirements_file(small_env(), 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="environment dict"):
        requirements_text(["six==1.16.0"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cwd=3"):
        capture(3)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


# --- environment.yml / conda -------------------------------------------------------------------


def test_environment_yml_content(tmp_path: Path) -> None:
    """environment.yml pins python X.Y and pip from conda-forge, the rest under pip:."""
    gone = {"url": (tmp_path / "gone").as_uri(), "dir_info": {"editable": True}}
    env = small_env(
        python={"version": "3.10.14"},
        more=[{"name": "gonepkg", "requirement": f"-e {tmp_path / 'gone'}", "direct_url": gone}],
    )
    path = write_conda_environment_file(env, tmp_path / "envdir", name="exp-1")
    assert path == tmp_path / "envdir" / "environment.yml"
    parsed = parse_environment_yml(path.read_text())
    assert parsed["name"] == "exp-1"
    assert parsed["channels"] == ["conda-forge"]
    assert parsed["dependencies"] == ["python=3.10", "pip"]
    assert parsed["pip"] == ["idna==3.7", "six==1.16.0"]
    skipped = f"# skipped -e {tmp_path / 'gone'}: local path {tmp_path / 'gone'} no longer exists"
    assert skipped in parsed["comments"]


def test_environment_yml_is_valid_yaml(tmp_path: Path) -> None:
    """Where PyYAML happens to be installed, it reads the same structure (quoting is right)."""
    yaml = pytest.importorskip("yaml")
    env = small_env(more=[{"name": "x", "requirement": "x @ git+https://h/x@abc#subdirectory=p"}])
    data = yaml.safe_load(conda_environment_text(env, name="n"))
    assert data["dependencies"][2]["pip"][-1] == "x @ git+https://h/x@abc#subdirectory=p"


def test_conda_without_any_conda_says_where_the_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no conda, mamba or micromamba, the error names environment.yml and the command."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("CONDA_EXE", raising=False)
    monkeypatch.delenv("MAMBA_EXE", raising=False)
    assert find_conda() is None
    with pytest.raises(ConfigError) as caught:
        create_conda_environment(small_env(), tmp_path / "envs" / "exp_conda_env")
    env_file = tmp_path / "envs" / "exp_conda_env.environment.yml"
    assert env_file.exists()
    assert str(env_file) in str(caught.value)
    assert "conda env create --prefix" in str(caught.value)


def stand_in_conda(tmp_path: Path, exit_code: int) -> Path:
    """A real executable at $CONDA_EXE that logs its arguments and makes the prefix."""
    exe = tmp_path / "tools" / "conda"
    exe.parent.mkdir()
    log = tmp_path / "conda-args.txt"
    exe.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {log}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --prefix ] && mkdir -p "$2"; shift; done\n'
        f"echo 'CondaError: stand-in says {exit_code}'; exit {exit_code}\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.mark.skipif(os.name == "nt", reason="the stand-in is a POSIX shell script")
def test_conda_exe_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CONDA_EXE runs as `env create --prefix PATH --file YML`; its output reaches progress."""
    monkeypatch.setenv("CONDA_EXE", str(stand_in_conda(tmp_path, 0)))
    seen: list[str] = []
    target = create_conda_environment(small_env(), tmp_path / "cenv", progress=seen.append)
    yml = tmp_path / "cenv.environment.yml"
    args = (tmp_path / "conda-args.txt").read_text().split()
    assert target == tmp_path / "cenv" and target.is_dir()
    assert args == ["env", "create", "--prefix", str(target), "--file", str(yml)]
    assert any("stand-in says 0" in line for line in seen)


@pytest.mark.skipif(os.name == "nt", reason="the stand-in is a POSIX shell script")
def test_conda_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conda that fails raises MarkovError carrying the command and conda's last line."""
    monkeypatch.setenv("CONDA_EXE", str(stand_in_conda(tmp_path, 3)))
    with pytest.raises(MarkovError, match="stand-in says 3"):
        create_conda_environment(small_env(), tmp_path / "cenv")


@pytest.mark.slow
@pytest.mark.skipif(find_conda() is None, reason="no conda, mamba or micromamba installed")
def test_real_conda_environment(tmp_path: Path) -> None:
    """Where a conda exists, the environment is created and its python imports six."""
    target = create_conda_environment(small_env(), tmp_path / "cenv")
    python = target / ("python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(python), "-c", "import six, idna"], check=True)


# --- virtualenv ------------------------------------------------------------------------------


def foreign_wheel(tmp_path: Path) -> Path:
    """A wheel built for another platform: present on disk, refused by pip here."""
    wheel = tmp_path / "wheels" / "bogus_pkg-1.0-cp27-cp27m-win32.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("bogus_pkg/__init__.py", "")
    return wheel


@pytest.mark.slow
@pytest.mark.index  # six and idna come from the package index
def test_virtualenv_installs_what_it_can_and_names_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned packages install and import in the new venv; the unreinstallable are named once."""
    # A six on our PYTHONPATH must not count as "already satisfied" for the venv's pip.
    make_dist(tmp_path / "outer-site", "six", "1.16.0", None)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "outer-site"))
    wheel = foreign_wheel(tmp_path)
    gone = tmp_path / "my-checkout"
    more = [
        {
            "name": "bogus_pkg",
            "requirement": f"bogus_pkg @ {wheel.as_uri()}",
            "direct_url": {"url": wheel.as_uri(), "archive_info": {}},
        },
        {
            "name": "my-project",
            "requirement": f"-e {gone}",
            "editable": True,
            "direct_url": {"url": gone.as_uri(), "dir_info": {"editable": True}},
        },
    ]
    progress: list[str] = []
    report = create_virtualenv(
        small_env(more=more), tmp_path / "a" / "venv", progress=progress.append
    )

    assert report.python.is_file()
    assert report.python_version.startswith(platform.python_version())
    assert sorted(report.installed) == ["idna==3.7", "six==1.16.0"]
    assert sorted(s.name for s in report.skipped) == ["bogus_pkg", "my-project"]
    assert "not a supported wheel" in next(
        s.reason for s in report.skipped if s.name == "bogus_pkg"
    )
    assert "bogus_pkg" in report.message and str(gone) in report.message
    assert any(line.startswith("Collecting six") for line in progress)
    code = "import six, idna; print(six.__version__, idna.__version__)"
    monkeypatch.delenv("PYTHONPATH")
    done = subprocess.run([str(report.python), "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["1.16.0", "3.7"]


def test_virtualenv_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    """A target holding other files is refused before anything is created."""
    (tmp_path / "keep.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match="not empty"):
        create_virtualenv(small_env(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
