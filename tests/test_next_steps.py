"""Every note and error that names a next step names one that works where it is read: a missing
[server] extra is named with its `pip install` line, never a ModuleNotFoundError traceback.

"Without the extra" is a child interpreter whose sys.modules holds None for starlette and uvicorn:
Python's own import system then raises ModuleNotFoundError for them, as in a venv that lacks them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WITHOUT_SERVER = "import sys\nsys.modules['starlette'] = sys.modules['uvicorn'] = None\n"
PIP_LINE = "pip install 'markov-otel[server]'"


def child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKOV_")}
    env |= {"MARKOV_CONFIG": str(tmp_path / "no-config.json")}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_serve_without_the_server_extra_names_the_pip_line(tmp_path: Path) -> None:
    """`mkv serve` without starlette/uvicorn exits 1 with one line naming the pip install line
    of the [server] extra, and no traceback."""
    code = WITHOUT_SERVER + (
        "from markov_otel.cli.main import main\nraise SystemExit(main(['serve', '--port', '0']))"
    )
    result = child(code, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mkv: ") and PIP_LINE in lines[0], lines


FIRST_RUN = """
from markov_otel import ExperimentRecorder
recorder = ExperimentRecorder(name="first")
recorder.register()
with recorder:
    recorder.add_record({"loss": 1.0})
"""


def test_first_run_note_without_the_server_extra_names_the_pip_line(tmp_path: Path) -> None:
    """The first-run note, where the [server] extra is missing, says to pip install it before
    `mkv serve` (which alone would be a traceback there)."""
    result = child(WITHOUT_SERVER + FIRST_RUN, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"`{PIP_LINE}` then `mkv serve`" in lines[0], lines


def test_first_run_note_with_the_server_extra_names_mkv_serve_alone(tmp_path: Path) -> None:
    """With the [server] extra installed, the note names `mkv serve` and no pip line."""
    result = child(FIRST_RUN, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "To go online: `mkv serve`" in lines[0], lines
    assert "pip install" not in lines[0]
