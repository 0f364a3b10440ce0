"""Bearer tokens: 401 without; a scoped token sees another project's recordings as missing (404)
and may not write them (403); the open-server rule."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend
from google.rpc.status_pb2 import Status
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series

from markov_otel.cli.main import main
from markov_otel.errors import ConfigError
from markov_otel.server import serve


@pytest.mark.parametrize("token", [None, "wrong"])
def test_every_route_needs_the_token(backend: Backend, token: str | None) -> None:
    """Reads, writes, ingest and pages all answer 401 without a valid token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rid = new_id()
    calls = [
        ("GET", "/api/v1/recordings", None),
        ("GET", f"/api/v1/recordings/{rid}", None),
        ("GET", f"/api/v1/recordings/{rid}/records?key=x", None),
        ("POST", "/api/v1/recordings", b'{"recording_id": "abc"}'),
        ("PATCH", f"/api/v1/recordings/{rid}", b"{}"),
        ("POST", "/v1/metrics", metrics_json_bytes(rid, series("x", 1))),
        ("GET", f"/recordings/{rid}", None),
        ("GET", "/", None),
    ]
    for method, path, body in calls:
        answer = httpx.request(
            method,
            backend.url + path,
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 401, (method, path)
    assert httpx.get(backend.url + "/api/v1/recordings", headers=backend.headers).status_code == 200


def test_otlp_401_is_a_protobuf_status_for_protobuf_requests(backend: Backend) -> None:
    """An unauthenticated protobuf export gets a google.rpc.Status body (OTLP/HTTP's error)."""
    answer = httpx.post(
        backend.url + "/v1/metrics",
        content=metrics_protobuf(new_id(), []),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert answer.status_code == 401
    assert "token" in Status.FromString(answer.content).message


def test_scoped_token_cannot_see_or_write_another_projects_recordings(tmp_path: Path) -> None:
    """A `TOKEN:PROJECT` token reads and writes its project; others' recordings are 404 to read
    or PATCH (as if missing) and 403 to register or ingest into."""
    server = Backend(tmp_path / "b", token="admin", extra_args=["--token", "team:alpha"])
    try:
        scoped = {"Authorization": "Bearer team"}
        api = server.url + "/api/v1/recordings"
        mine, theirs = new_id(), new_id()
        ok = httpx.post(api, json={"recording_id": mine, "project_id": "alpha"}, headers=scoped)
        assert ok.status_code == 201
        httpx.post(api, json={"recording_id": theirs, "project_id": "beta"}, headers=server.headers)
        assert httpx.get(f"{api}/{mine}", headers=scoped).status_code == 200
        assert httpx.get(f"{api}/{theirs}", headers=scoped).status_code == 404
        assert httpx.patch(f"{api}/{theirs}", json={}, headers=scoped).status_code == 404
        hijack = {"recording_id": theirs, "project_id": "alpha"}
        assert httpx.post(api, json=hijack, headers=scoped).status_code == 403
        assert (
            httpx.post(
                api, json={"recording_id": new_id(), "project_id": "beta"}, headers=scoped
            ).status_code
            == 403
        )
        body = metrics_json_bytes(theirs, series("x", 2))
        answer = httpx.post(
            server.url + "/v1/metrics",
            content=body,
            headers={**scoped, "Content-Type": "application/json"},
        )
        assert answer.status_code == 403
        listed = httpx.get(api, headers=scoped).json()
        assert [r["recording_id"] for r in listed] == [mine]
    finally:
        server.stop()


def test_tokens_from_the_environment_are_accepted(tmp_path: Path) -> None:
    """MARKOV_SERVER_TOKENS (comma-separated, TOKEN or TOKEN:PROJECT) adds accepted tokens."""
    env = {"MARKOV_SERVER_TOKENS": "envtoken, scoped:alpha"}
    server = Backend(tmp_path / "env", token="cli", env=env)
    try:
        api = server.url + "/api/v1/recordings"
        for token, status in [("cli", 200), ("envtoken", 200), ("scoped", 200), ("nope", 401)]:
            answer = httpx.get(api, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == status, token
        scoped = {"Authorization": "Bearer scoped"}
        answer = httpx.get(api, params={"project_id": "beta"}, headers=scoped)
        assert answer.status_code == 403
    finally:
        server.stop()


def test_open_server_refuses_a_non_loopback_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with --open, serve() without tokens refuses to listen beyond loopback and says how
    to fix it."""
    monkeypatch.delenv("MARKOV_SERVER_TOKENS", raising=False)
    with pytest.raises(ConfigError, match="--token"):
        serve(host="0.0.0.0", port=0, db=str(tmp_path / "x.db"), tokens=(), open_server=True)
    assert not (tmp_path / "x.db").exists()


def test_serve_without_a_token_refuses_to_start_unless_told_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mkv serve` with no token anywhere exits 1 naming --token and --open, before it listens
    or creates the database, as its help says."""
    monkeypatch.delenv("MARKOV_SERVER_TOKENS", raising=False)
    db = tmp_path / "x.db"
    assert main(["serve", "--port", "0", "--db", f"sqlite:///{db}"]) == 1
    error = capsys.readouterr().err
    assert "no token" in error and "--token" in error and "--open" in error
    assert not db.exists()


def test_open_with_a_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--open beside a token (flag or MARKOV_SERVER_TOKENS) contradicts itself: exit 1."""
    monkeypatch.setenv("MARKOV_SERVER_TOKENS", "from-env")
    assert main(["serve", "--port", "0", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--open"]) == 1
    assert "--open" in capsys.readouterr().err


def test_serve_help_names_the_open_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`mkv serve --help` says a token is needed and --open is the way to run without one."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--open" in text and "refuses to start without a token" in text


def test_open_server_on_loopback_accepts_requests_without_token(tmp_path: Path) -> None:
    """With --open (and no token) on loopback every request is accepted, and the server said
    so in exactly one line when it started."""
    server = Backend(tmp_path / "open", token="")
    try:
        answer = httpx.post(server.url + "/api/v1/recordings", json={"recording_id": new_id()})
        assert answer.status_code == 201
        said = [line for line in server.log().splitlines() if "OPEN" in line]
        assert len(said) == 1 and "no token" in said[0], server.log()
    finally:
        server.stop()


def test_page_token_query_moves_into_a_cookie(backend: Backend) -> None:
    """`/?token=T` redirects to `/` with an HttpOnly cookie that then opens the pages."""
    with httpx.Client(base_url=backend.url) as client:
        answer = client.get("/", params={"token": backend.token})
        assert answer.status_code == 303 and answer.headers["location"].endswith("/")
        assert "httponly" in answer.headers["set-cookie"].lower()
        assert client.get("/").status_code == 200


def test_a_page_token_that_cannot_be_a_cookie_is_400(backend: Backend) -> None:
    """`?token=` holding a character a cookie cannot carry answers 400 (found by test_fuzz)."""
    for token in ("\u0100", "tab\there"):
        answer = httpx.get(
            backend.url + "/", params={"token": token}, headers=backend.headers,
            follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 400, token
        assert "set-cookie" not in answer.headers
