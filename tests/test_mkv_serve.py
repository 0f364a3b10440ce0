"""`mkv serve` itself (the console script users run), end to end with a recorder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from markov_otel import ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main


def test_mkv_serve_takes_an_online_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mkv serve with a token from MARKOV_SERVER_TOKENS: 401 without it, every point with it."""
    mkv = shutil.which("mkv")
    assert mkv is not None, "the package's console script is not installed"
    port_file = tmp_path / "port"
    env_token = "from-env"
    monkeypatch.setenv("MARKOV_SERVER_TOKENS", env_token)
    server = subprocess.Popen(
        [mkv, "serve", "--port", "0", "--port-file", str(port_file),
         "--db", f"sqlite:///{tmp_path / 'serve.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        assert requests.get(f"{url}/api/v1/recordings", timeout=5).status_code == 401
        recorder = ExperimentRecorder(
            "served", recording_mode=RecordingMode.ONLINE, endpoint=url, api_key=env_token
        )
        with recorder:
            for i in range(250):
                recorder.add_record({"loss": 1.0 / (i + 1)})
        auth = {"Authorization": f"Bearer {env_token}"}
        rows = requests.get(
            f"{url}/api/v1/recordings/{recorder.recording_id}/records",
            params={"key": "loss"}, headers=auth, timeout=5,
        ).json()  # fmt: skip
        assert [r["step"] for r in rows] == list(range(250))
        assert recorder.experiment_url == f"{url}/recordings/{recorder.recording_id}"
    finally:
        server.terminate()
        server.wait(10)


def test_mkv_serve_refuses_several_workers_over_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workers 2 over SQLite exits 1 naming PostgreSQL, before listening or touching the db."""
    db = tmp_path / "one-writer.db"
    assert main(["serve", "--port", "0", "--workers", "2", "--db", f"sqlite:///{db}"]) == 1
    error = capsys.readouterr().err
    assert "--workers 2 needs PostgreSQL" in error
    assert not db.exists()


def test_mkv_serve_passes_max_concurrent_ingest_to_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mkv serve hands --max-concurrent-ingest to the server, whose check refuses 0."""
    args = ["serve", "--port", "0", "--db", f"sqlite:///{tmp_path / 's.db'}", "--token", "t"]
    assert main([*args, "--max-concurrent-ingest", "0"]) == 1
    assert "max_concurrent_ingest=0 must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--host", "0.0.0.0", "--port", "0", "--db", "postgresql://u@h/db", "--token", "a:p1",
         "--token", "b", "--port-file", "pf", "--public-url", "https://x", "--workers", "3",
         "--max-concurrent-ingest", "9", "--max-body-bytes", "1024", "--trusted-proxy", "10.0.0.1",
         "--trusted-proxy", "10.0.1.0/24"],
        ["--open"],
    ],
)  # fmt: skip
def test_mkv_serve_and_python_m_server_parse_every_option_alike(argv: list[str]) -> None:
    """One parser: `mkv serve ARGS` and `python -m markov_otel.server ARGS` give the same settings,
    defaults included, so the two cannot drift apart again."""
    from markov_otel.cli.main import build_parser
    from markov_otel.server.__main__ import build_parser as server_parser

    via_mkv = vars(build_parser().parse_args(["serve", *argv]))
    via_module = vars(server_parser().parse_args(argv))
    assert via_mkv == via_module
    assert via_mkv["max_concurrent_ingest"] == (9 if "--max-concurrent-ingest" in argv else 4)


def test_mkv_serve_help_needs_no_server_extra() -> None:
    """`mkv serve --help` imports nothing of the server (starlette, uvicorn), so it works in a venv
    without the [server] extra."""
    code = (
        "import sys\n"
        "from markov_otel.cli.main import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--max-body-bytes" in done.stdout
    assert done.stdout.strip().endswith("[]")
