"""mkv in-process through main([...]), and once end to end as the installed console script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from markov_otel import ExperimentAlertCondition, ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "config.json"


def record_run(name: str = "cli-run", **kwargs: object) -> ExperimentRecorder:
    recorder = ExperimentRecorder(
        name=name,
        recording_mode=RecordingMode.OFFLINE,
        hyper_parameters={"lr": 0.01},
        **kwargs,
    )
    recorder.attach_alert_on(ExperimentAlertCondition("loss", "<", 0.5), "halfway")  # type: ignore[arg-type]
    with recorder:
        for loss in (0.9, 0.6, 0.4):
            recorder.add_record({"loss": loss, "acc": 1 - loss})
        recorder.summary.add_training_loss(0.4)
    return recorder


# -- mode ----------------------------------------------------------------------------------------


def test_mode_prints_offline_by_default_and_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`mkv mode` with nothing configured prints offline (what a recorder does) and, on stderr,
    that it is the default while no endpoint is configured; it writes no file."""
    code, out, err = run(["mode"], capsys)
    assert (code, out) == (0, "offline\n")
    assert "default" in err and "no endpoint" in err
    assert not config_file(tmp_path).exists()
    assert run(["config", "set", "endpoint", "http://127.0.0.1:9"], capsys)[0] == 0
    code, out, err = run(["mode"], capsys)
    assert (code, out) == (0, "online\n") and "default" in err


def test_mode_set_persists_with_mode_0600(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`mkv mode offline` saves to the config file (0600) and `mkv mode` reads it back."""
    code, out, _ = run(["mode", "offline"], capsys)
    assert code == 0 and "offline" in out
    path = config_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"mode": "offline"}
    assert run(["mode"], capsys)[1] == "offline\n"
    assert run(["mode", "online"], capsys)[0] == 0
    assert run(["mode"], capsys)[1] == "online\n"


def test_mode_env_overrides_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MARKOV_MODE wins over the file; setting the mode says so."""
    monkeypatch.setenv("MARKOV_MODE", "online")
    code, out, _ = run(["mode", "offline"], capsys)
    assert code == 0 and "MARKOV_MODE=online overrides" in out
    assert run(["mode"], capsys)[1] == "online\n"


def test_mode_refuses_unknown_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`mkv mode sideways` is a usage error and writes nothing."""
    with pytest.raises(SystemExit) as exit_info:
        main(["mode", "sideways"])
    assert exit_info.value.code == 2
    assert "sideways" in capsys.readouterr().err
    assert not config_file(tmp_path).exists()


# -- config --------------------------------------------------------------------------------------


def test_config_set_get_unset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """config set/get/unset round-trip a key; the file stays 0600; get prints the value in effect
    (the default once unset) with its source on stderr; a key with no value at all exits 1."""
    assert run(["config", "set", "endpoint", "http://example.test:9"], capsys)[0] == 0
    code, out, err = run(["config", "get", "endpoint"], capsys)
    assert (code, out) == (0, "http://example.test:9\n")
    assert f"config file {config_file(tmp_path)}" in err
    assert stat.S_IMODE(config_file(tmp_path).stat().st_mode) == 0o600
    assert run(["config", "unset", "endpoint"], capsys)[0] == 0
    assert run(["config", "get", "endpoint"], capsys)[:3] == (
        0, "http://127.0.0.1:8470\n", "(default)\n"
    )  # fmt: skip
    code, out, err = run(["config", "get", "webhook_url"], capsys)
    assert (code, out) == (1, "") and "webhook_url is not set" in err
    assert json.loads(config_file(tmp_path).read_text()) == {}


def test_config_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`mkv config path` prints the file MARKOV_CONFIG names."""
    assert run(["config", "path"], capsys) == (0, f"{config_file(tmp_path)}\n", "")


def test_config_api_key_is_never_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`mkv config get api_key` says <set>, not the key, while the file holds it (0600)."""
    assert run(["config", "set", "api_key", "s3cret-token"], capsys)[0] == 0
    code, out, err = run(["config", "get", "api_key"], capsys)
    assert code == 0 and "s3cret" not in out + err and out == "<set>\n"
    code, out, err = run(["config", "list"], capsys)
    assert code == 0 and "s3cret" not in out + err and "<set>" in out
    assert stat.S_IMODE(config_file(tmp_path).stat().st_mode) == 0o600


def test_config_endpoint_reaches_recorder(capsys: pytest.CaptureFixture[str]) -> None:
    """A configured endpoint is what the next recorder uses."""
    assert run(["config", "set", "endpoint", "http://127.0.0.1:9999/"], capsys)[0] == 0
    recorder = ExperimentRecorder(name="x", recording_mode=RecordingMode.OFFLINE)
    assert recorder.config["endpoint"] == "http://127.0.0.1:9999"


def test_config_bad_mode_value_is_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`mkv config set mode sideways` exits 1 with one `mkv:` line on stderr, no traceback."""
    code, out, err = run(["config", "set", "mode", "sideways"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("mkv: ") and err.count("\n") == 1 and "sideways" in err
    assert not config_file(tmp_path).exists()


def test_config_set_without_value_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`mkv config set endpoint` without a value exits 1 saying VALUE is needed."""
    code, _, err = run(["config", "set", "endpoint"], capsys)
    assert code == 1 and "VALUE" in err and err.count("\n") == 1


def test_corrupt_config_file_is_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A corrupt config file is reported in one line naming it, exit 1."""
    path = config_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    code, _, err = run(["mode"], capsys)
    assert code == 1 and str(path) in err and err.count("\n") == 1


# -- runs and show -------------------------------------------------------------------------------


def test_runs_empty(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    """`mkv runs` with no runs says so and exits 0."""
    code, out, _ = run(["runs"], capsys)
    assert code == 0 and "no runs" in out


def test_runs_lists_local_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """`mkv runs` lists each run: id, name, status, points and not synced for offline runs."""
    first = record_run("first-run")
    second = record_run("second-run")
    code, out, _ = run(["runs"], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert set(rows) == {first.recording_id, second.recording_id}
    row = rows[first.recording_id]
    assert (row[1], row[2], row[-2], row[-1]) == ("first-run", "finished", "6", "local")


def test_runs_dir_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`mkv runs --dir` reads another runs directory."""
    other = tmp_path / "elsewhere"
    recorder = record_run(markov_dir=str(other))
    assert recorder.recording_id not in run(["runs"], capsys)[1]
    assert recorder.recording_id in run(["runs", "--dir", str(other)], capsys)[1]


def test_show_text(capsys: pytest.CaptureFixture[str]) -> None:
    """`mkv show` prints identity, hyperparameters, summary, last values and alerts."""
    recorder = record_run()
    code, out, _ = run(["show", recorder.recording_id], capsys)
    assert code == 0
    assert recorder.recording_id in out and "cli-run" in out and "finished" in out
    assert "lr" in out and "0.01" in out
    assert "training_loss" in out
    assert "acc" in out and "0.6" in out  # last value of acc
    assert "step 2: halfway (loss=0.4)" in out


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`mkv show --json` prints one JSON object with the run's state."""
    recorder = record_run()
    code, out, _ = run(["show", recorder.recording_id, "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["recording_id"] == recorder.recording_id
    assert info["status"] == "finished"
    assert info["hyper_parameters"] == {"lr": 0.01}
    assert info["summary"] == {"training_loss": 0.4}
    assert info["last_values"]["loss"] == 0.4
    assert info["points"] == 6
    assert info["unsent_lines"] > 0
    assert info["duration"] == info["ended_at"] - info["started_at"] >= 0
    assert [a["text"] for a in info["alerts"]] == ["halfway"]


@pytest.mark.parametrize("run_id", ["0123456789abcdef0123456789abcdef", "../etc", "a/b"])
def test_show_unknown_run_is_one_line_error(
    capsys: pytest.CaptureFixture[str], run_id: str
) -> None:
    """`mkv show` of an unknown or unsafe id exits 1 with one line on stderr naming it."""
    record_run()
    code, out, err = run(["show", run_id], capsys)
    assert code == 1 and out == ""
    assert err.startswith("mkv: ") and err.count("\n") == 1
    assert run_id in err
    assert "Traceback" not in err


# -- the installed console script ----------------------------------------------------------------


def test_installed_mkv_end_to_end(tmp_path: Path) -> None:
    """Installed `mkv`: set offline mode, a script records without recording_mode, mkv shows it."""
    mkv = Path(sys.executable).with_name("mkv")
    assert mkv.is_file()
    env = dict(os.environ)  # the isolated fixture's MARKOV_CONFIG / MARKOV_DIR are in here
    result = subprocess.run(
        [str(mkv), "mode", "offline"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    script = textwrap.dedent(
        """
        from markov_otel import ExperimentRecorder
        recorder = ExperimentRecorder(name="e2e")
        with recorder:
            for i in range(4):
                recorder.add_record({"loss": 1.0 / (i + 1)})
        print(recorder.recording_id)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    result = subprocess.run(
        [str(mkv), "show", run_id, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["mode"], info["status"], info["points"]) == ("offline", "finished", 4)
    result = subprocess.run(
        [str(mkv), "show", "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("mkv: ") and result.stderr.count("\n") == 1
