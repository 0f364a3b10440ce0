"""The integrations' extras in pyproject.toml: what pip installs for each framework, read with
pip's own requirement and marker rules (packaging) for the platforms the wheels exist for."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
LINUX_X86 = {"platform_system": "Linux", "platform_machine": "x86_64", "sys_platform": "linux"}
LINUX_ARM = {"platform_system": "Linux", "platform_machine": "aarch64", "sys_platform": "linux"}
WINDOWS = {"platform_system": "Windows", "platform_machine": "AMD64", "sys_platform": "win32"}
MAC = {"platform_system": "Darwin", "platform_machine": "arm64", "sys_platform": "darwin"}


def installed(extra: str, platform: dict[str, str]) -> set[str]:
    """The distribution names an extra asks pip for on `platform`."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    wanted = (Requirement(text) for text in extras[extra])
    return {r.name for r in wanted if r.marker is None or r.marker.evaluate(platform)}


@pytest.mark.parametrize("platform", [LINUX_X86, LINUX_ARM, WINDOWS])
def test_the_xgboost_extra_takes_the_cpu_build_where_it_exists(platform: dict[str, str]) -> None:
    """On Linux and Windows, [xgboost] asks for xgboost-cpu (no CUDA NCCL, ~470 MB), never the
    xgboost distribution, whose Linux x86_64 wheel requires nvidia-nccl-cu12."""
    names = installed("xgboost", platform)
    assert "xgboost-cpu" in names and "xgboost" not in names


def test_the_xgboost_extra_takes_xgboost_on_macos() -> None:
    """No xgboost-cpu wheel for macOS, whose xgboost wheel has no NCCL: plain xgboost there."""
    names = installed("xgboost", MAC)
    assert "xgboost" in names and "xgboost-cpu" not in names


@pytest.mark.parametrize("extra", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("platform", [LINUX_X86, MAC])
def test_the_boosting_extras_bring_scikit_learn(extra: str, platform: dict[str, str]) -> None:
    """XGBRegressor and LGBMRegressor (the scikit-learn API) need scikit-learn."""
    assert "scikit-learn" in installed(extra, platform)


@pytest.mark.parametrize("extra", ["optuna", "accelerate"])
def test_the_integrations_extra_includes(extra: str) -> None:
    """[integrations] names every integration's extra."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    (everything,) = extras["integrations"]
    assert extra in Requirement(everything).extras
