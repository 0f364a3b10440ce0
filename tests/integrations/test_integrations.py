"""What every integration shares, without any framework: lazy imports, the message for a missing
framework, the recorder= / arguments choice, and hyperparameters made plain."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import subprocess
import sys
import textwrap
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.integrations.params import plain_params
from markov_otel.integrations.recording import Recording

FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "transformers", "keras", "xgboost",
              "lightgbm", "tensorflow", "jax", "optuna", "accelerate")  # fmt: skip
EXTRAS = ("lightning", "transformers", "keras", "xgboost", "lightgbm", "optuna", "accelerate")


def run_python(code: str) -> Any:
    """Run `code` in a fresh interpreter; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_package_imports_no_framework() -> None:
    """`import markov_otel.integrations` (and markov_otel) loads none of the frameworks."""
    loaded = run_python(f"""
        import json, sys
        import markov_otel, markov_otel.integrations
        import markov_otel.integrations.recording, markov_otel.integrations.params
        print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))
    """)
    assert loaded == []


def test_a_missing_framework_names_the_extra_to_install() -> None:
    """With the framework not importable, each module's ImportError names its pip extra."""
    messages = run_python(f"""
        import importlib, importlib.abc, json, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {FRAMEWORKS!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NotInstalled())
        out = {{}}
        for extra in {EXTRAS!r}:
            try:
                importlib.import_module("markov_otel.integrations." + extra)
            except ImportError as exc:
                out[extra] = str(exc)
        print(json.dumps(out))
    """)
    assert sorted(messages) == sorted(EXTRAS)
    for extra, message in messages.items():
        assert f"pip install 'markov-otel[{extra}]'" in message


def test_keras_without_its_backend_says_how_to_choose_one() -> None:
    """keras installed, its backend not: the message names KERAS_BACKEND, not the extra."""
    if importlib.util.find_spec("keras") is None:  # found, not imported: no backend chosen here
        pytest.skip("keras is not installed")
    message = run_python("""
        import json, os
        os.environ["KERAS_BACKEND"] = "jax"
        import importlib.abc, sys

        class NoJax(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "jax":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoJax())
        try:
            import markov_otel.integrations.keras
        except ImportError as exc:
            print(json.dumps(str(exc)))
    """)
    assert "KERAS_BACKEND=torch" in message
    assert "markov-otel[keras]" not in message


def test_a_recorder_that_is_not_an_experiment_recorder_is_refused() -> None:
    """recorder= must be an ExperimentRecorder: the ConfigError says so."""
    with pytest.raises(ConfigError, match=r"must be a markov_otel\.ExperimentRecorder"):
        Recording("lightning", "my-run", {})  # type: ignore[arg-type]


def test_bad_recorder_arguments_raise_when_the_integration_is_built() -> None:
    """The ExperimentRecorder is built at once, so a typo fails before training starts."""
    with pytest.raises(ConfigError, match="batch_sise"):
        Recording("keras", None, {"batch_sise": 10})


def test_an_owned_recording_used_after_finish_continues_the_same_recording(
    isolated: Path,
) -> None:
    """finish() then record(): a new recorder on the same recording id, steps going on."""
    recording = Recording("test", None, {"recording_mode": RecordingMode.OFFLINE})
    first = recording.recorder
    recording.record({"loss": 1.0}, step=0)
    recording.finish("finished")
    recording.record({"loss": 0.5}, step=1)
    recording.finish("failed")
    assert recording.recorder is not first
    assert recording.recorder.recording_id == first.recording_id
    assert [p.name for p in isolated.iterdir()] == [first.recording_id]
    info = json.loads((isolated / first.recording_id / "recording.json").read_text())
    assert info["status"] == "failed"
    assert info["last_values"] == {"loss": 0.5}


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Optimizer:
    name: str
    betas: tuple[float, float]


class Scalar:
    """Stands for a numpy / torch scalar: a number behind `.item()`."""

    def item(self) -> float:
        return 0.25


class Many:
    """Stands for an array of several values: `.item()` refuses."""

    def item(self) -> float:
        raise ValueError("only one element tensors can be converted to Python scalars")

    def __str__(self) -> str:
        return "[1, 2]"


def schedule(step: int) -> float:
    return 0.1


def test_hyperparameters_become_plain_values() -> None:
    """Namespace, dataclass, enums, tuples, sets, paths, scalars, functions: plain values."""
    params = Namespace(
        lr=0.1,
        color=Color.RED,
        level=Level.HIGH,
        optimizer=Optimizer("adam", (0.9, 0.999)),
        tags={"a"},
        path=Path("runs") / "x",
        scale=Scalar(),
        grid=Many(),
        schedule=schedule,
        nested=Namespace(depth=2, inner={1: None}),
    )
    assert plain_params(params) == {
        "lr": 0.1,
        "color": "red",
        "level": 3,
        "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
        "tags": ["a"],
        "path": "runs/x",
        "scale": 0.25,
        "grid": "[1, 2]",
        "schedule": f"{__name__}.schedule",
        "nested": {"depth": 2, "inner": {"1": None}},
    }
    assert type(plain_params({"level": Level.HIGH})["level"]) is int


def test_a_self_referencing_hyperparameter_ends_as_text() -> None:
    """A cycle is cut at the recording's nesting limit instead of recursing forever."""
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    plain = plain_params({"loop": loop})
    depth, node = 0, plain["loop"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["self"]
    assert isinstance(node, str)
    assert depth <= 16


def test_hyperparameters_that_are_not_a_mapping_are_refused() -> None:
    """A list is no set of hyperparameters: ConfigError with an example."""
    with pytest.raises(ConfigError, match="must be a dict"):
        plain_params([("lr", 0.1)])


def test_a_given_recorder_is_not_stopped_by_finish(isolated: Path) -> None:
    """recorder=: finish() leaves it running; its owner stops it."""
    recorder = ExperimentRecorder("mine", recording_mode=RecordingMode.OFFLINE)
    recording = Recording("test", recorder, {})
    recording.record({"loss": 1.0})
    recording.finish("failed")
    recorder.add_record({"loss": 0.5})
    recorder.stop()
    info = json.loads((isolated / recorder.recording_id / "recording.json").read_text())
    assert info["status"] == "finished"
    assert info["points"] == 2
