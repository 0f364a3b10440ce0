"""The HTTP edges of the backend: framing (request smuggling), gzip members, cross-site writes,
the headers every page carries, the session cookie behind TLS, wrong-token backoff.

Raw sockets where the question is what goes over the wire (a hidden request, a closed
connection); httpx elsewhere. Every test runs against the real server subprocess.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, metrics_protobuf, new_id, series
from polling import until

from markov_otel.server.backoff import FORGET_AFTER, FREE_FAILURES, MAX_DELAY, WrongTokens

JSON_TYPE = {"Content-Type": "application/json"}
PROTO_TYPE = {"Content-Type": "application/x-protobuf"}


def read_all(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends on `sock` until it closes (True) or goes quiet (False)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return got, False
    return got, True


def smuggling_request(backend: Backend, hidden_id: str) -> bytes:
    """A POST framed both ways: chunked, its body is empty; by Content-Length, it carries a
    second request (an ingest of `hidden_id`) that a Content-Length proxy would pass along."""
    batch = metrics_json_bytes(hidden_id, series("loss", 3))
    hidden = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {backend.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(batch)}\r\n\r\n"
    ).encode() + batch
    body = b"0\r\n\r\n" + hidden
    head = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {backend.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    return head.encode() + body


def test_content_length_with_transfer_encoding_is_400_and_the_connection_closes(
    parsed: Backend,
) -> None:
    """Both framings on one request, under either parser: one 400, the connection closed, and
    the request hidden in the body never answered nor stored. h11 passes it to the app, whose
    check (edges.py) names both headers; httptools refuses it itself, with uvicorn's text."""
    backend = parsed
    hidden_id = new_id()
    with socket.create_connection(("127.0.0.1", backend.port)) as sock:
        sock.sendall(smuggling_request(backend, hidden_id))
        got, closed = read_all(sock)
    assert got.count(b"HTTP/1.1 ") == 1, got
    assert got.startswith(b"HTTP/1.1 400 "), got
    if "h11" in backend.extra_args:
        assert b"Content-Length" in got and b"Transfer-Encoding" in got, got
    else:
        assert got.endswith(b"Invalid HTTP request received."), got
    assert closed, "the server kept the connection open after the ambiguous request"
    assert backend.records(hidden_id, "loss") == []


def test_a_chunked_request_alone_is_still_taken(parsed: Backend) -> None:
    """Control: Transfer-Encoding: chunked without Content-Length is ordinary HTTP/1.1: stored,
    under either parser."""
    backend = parsed
    rid = new_id()
    batch = metrics_json_bytes(rid, series("loss", 3))
    head = (
        f"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {backend.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    chunked = f"{len(batch):x}\r\n".encode() + batch + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", backend.port)) as sock:
        sock.sendall(head.encode() + chunked)
        got, _ = read_all(sock)
    assert got.startswith(b"HTTP/1.1 200 "), got
    assert len(backend.records(rid, "loss")) == 3


# -- gzip --------------------------------------------------------------------------------------


def members(*parts: bytes) -> bytes:
    """One gzip member per part, concatenated (RFC 1952 §2.2: a gzip file is a series of them)."""
    return b"".join(gzip.compress(part) for part in parts)


def post_gzip(backend: Backend, path: str, body: bytes, ctype: dict[str, str]) -> httpx.Response:
    headers = {**backend.headers, **ctype, "Content-Encoding": "gzip"}
    return httpx.post(backend.url + path, content=body, headers=headers, timeout=30)


def test_every_member_of_a_multi_member_gzip_json_body_is_decoded(parsed: Backend) -> None:
    """An OTLP-JSON body split across two gzip members: 200 and all 10 points stored."""
    backend = parsed
    rid = new_id()
    body = metrics_json_bytes(rid, series("loss", 10))
    answer = post_gzip(backend, "/v1/metrics", members(body[:100], body[100:]), JSON_TYPE)
    assert answer.status_code == 200, answer.text
    assert [r["step"] for r in backend.records(rid, "loss")] == list(range(10))


def test_every_member_of_a_multi_member_gzip_protobuf_body_is_decoded(parsed: Backend) -> None:
    """Two protobuf requests, one gzip member each, make one merged request: all 10 points
    stored, not only the first member's 5."""
    backend = parsed
    rid = new_id()
    points = series("loss", 10)
    first, second = metrics_protobuf(rid, points[:5]), metrics_protobuf(rid, points[5:])
    answer = post_gzip(backend, "/v1/metrics", members(first, second), PROTO_TYPE)
    assert answer.status_code == 200, answer.text
    assert [r["step"] for r in backend.records(rid, "loss")] == list(range(10))


@pytest.mark.parametrize("tail", [b"garbage", b"\x00\x00\x00\x00", b"\x1f"])
def test_bytes_after_the_last_gzip_member_are_400(parsed: Backend, tail: bytes) -> None:
    """Anything after the last whole member (text, zero padding, half a header) is a 400 that
    says so, and nothing of the body is stored."""
    backend = parsed
    rid = new_id()
    body = members(metrics_json_bytes(rid, series("loss", 3))) + tail
    answer = post_gzip(backend, "/v1/metrics", body, JSON_TYPE)
    assert answer.status_code == 400, answer.text
    assert f"gzip body has {len(tail)} bytes after its last member" in answer.json()["error"]
    assert backend.records(rid, "loss") == []


def test_a_rest_route_takes_a_multi_member_gzip_body_and_refuses_a_trailing_one(
    backend: Backend,
) -> None:
    """POST /api/v1/recordings decodes gzip exactly as ingest does: every member, no tail."""
    rid = new_id()
    doc = json.dumps({"recording_id": rid, "name": "gz"}).encode()
    bad = post_gzip(backend, "/api/v1/recordings", members(doc) + b"x", JSON_TYPE)
    assert bad.status_code == 400 and "gzip" in bad.json()["error"], bad.text
    good = post_gzip(backend, "/api/v1/recordings", members(doc[:10], doc[10:]), JSON_TYPE)
    assert good.status_code in (200, 201), good.text
    read = httpx.get(f"{backend.url}/api/v1/recordings/{rid}", headers=backend.headers)
    assert read.json()["name"] == "gz"


def test_a_gzip_bomb_split_across_members_is_still_413(tmp_path: Path) -> None:
    """The inflated-size bound counts every member: three members of 400 kB of zeros each, under
    a 1 MB limit, is 413 although each member alone fits."""
    server = Backend(tmp_path / "b", extra_args=["--max-body-bytes", "1000000"])
    try:
        bomb = members(*[b"\0" * 400_000] * 3)
        assert len(bomb) < 10_000
        answer = post_gzip(server, "/v1/metrics", bomb, JSON_TYPE)
        assert answer.status_code == 413, answer.text
    finally:
        server.stop()


def test_more_gzip_members_than_any_client_writes_is_400(backend: Backend) -> None:
    """1001 empty members (20 bytes each): a 400 naming the member count, answered at once."""
    answer = post_gzip(backend, "/v1/metrics", members(*[b""] * 1001), JSON_TYPE)
    assert answer.status_code == 400 and "members" in answer.json()["error"], answer.text


def test_login_decodes_a_multi_member_gzip_form_and_refuses_a_trailing_one(
    backend: Backend,
) -> None:
    """POST /login takes gzip like every route with a body: two members sign in (303), bytes
    after the last member are a 400 naming gzip, and no cookie is set."""
    form = f"token={backend.token}&next=/".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
    good = httpx.post(backend.url + "/login", content=members(form[:7], form[7:]), headers=headers)
    assert good.status_code == 303 and "markov_token=" in good.headers["set-cookie"]
    bad = httpx.post(backend.url + "/login", content=members(form) + b"?", headers=headers)
    assert bad.status_code == 400 and "gzip" in bad.text and "set-cookie" not in bad.headers


# -- headers on every answer -------------------------------------------------------------------


def test_every_answer_carries_csp_frame_ancestors_referrer_policy_and_nosniff(
    backend: Backend,
) -> None:
    """Pages (signed in or the login form), API answers, static files, errors and /healthz all
    carry the CSP (with frame-ancestors 'none'), Referrer-Policy and nosniff."""
    rid = new_id()
    httpx.post(backend.url + "/v1/metrics", content=metrics_json_bytes(rid, series("loss", 2)),
               headers={**backend.headers, **JSON_TYPE})  # fmt: skip
    html = {"Accept": "text/html"}
    answers = [
        httpx.get(backend.url + "/", headers={**backend.headers, **html}),
        httpx.get(backend.url + f"/recordings/{rid}", headers={**backend.headers, **html}),
        httpx.get(backend.url + f"/recordings/{rid}", headers=html),  # the login form, 401
        httpx.get(backend.url + "/login"),
        httpx.get(backend.url + "/api/v1/recordings", headers=backend.headers),
        httpx.get(backend.url + "/static/charts.js"),
        httpx.get(backend.url + "/healthz"),
        httpx.get(backend.url + "/no/such/route", headers=backend.headers),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 200, 200, 200, 200, 404]
    for answer in answers:
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, answer.url
        assert answer.headers.get("referrer-policy") == "no-referrer", answer.url
        assert answer.headers.get("x-content-type-options") == "nosniff", answer.url


# -- writes from other sites -------------------------------------------------------------------

CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site"},
]


@pytest.mark.parametrize(
    "where", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
def test_a_login_posted_from_another_site_is_403_and_sets_no_cookie(
    backend: Backend, where: dict[str, str]
) -> None:
    """Login CSRF: a form on another site posting a (the attacker's) valid token to /login is
    refused with a 403 that names the reason, and no cookie is set."""
    form = {"token": backend.token, "next": "/"}
    answer = httpx.post(backend.url + "/login", data=form, headers=where)
    assert answer.status_code == 403, answer.text
    assert "another site" in answer.json()["error"]
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize(
    "where",
    [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, "own-origin"],
    ids=["no-headers", "same-origin", "address-bar", "own-origin"],
)
def test_a_login_from_this_servers_own_page_or_no_browser_signs_in(
    backend: Backend, where: dict[str, str] | str
) -> None:
    """Control: the server's own form (same-origin, or Origin equal to its host), the address
    bar and a client that sends neither header still sign in."""
    headers = {"Origin": backend.url} if where == "own-origin" else where
    assert isinstance(headers, dict)
    answer = httpx.post(backend.url + "/login", data={"token": backend.token}, headers=headers)
    assert answer.status_code == 303, answer.text
    assert "markov_token=" in answer.headers["set-cookie"]


def test_writes_from_another_site_are_403_on_every_write_route_and_store_nothing(
    backend: Backend,
) -> None:
    """A page of another site that holds the cookie (or even a token) cannot write: ingest,
    register and PATCH are 403 and nothing is stored; the same requests without the browser's
    headers (the recorder's) are taken."""
    rid = new_id()
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    cookie = {"Cookie": f"markov_token={backend.token}"}
    batch = metrics_json_bytes(rid, series("loss", 3))
    writes = [
        ("POST", "/v1/metrics", batch),
        ("POST", "/api/v1/recordings", json.dumps({"recording_id": rid}).encode()),
        ("PATCH", f"/api/v1/recordings/{rid}", b'{"notes": "x"}'),
    ]
    for method, path, body in writes:
        for credentials in (cookie, backend.headers):
            answer = httpx.request(method, backend.url + path, content=body,
                                   headers={**credentials, **evil, **JSON_TYPE})  # fmt: skip
            assert answer.status_code == 403, (method, path, answer.text)
    assert backend.records(rid, "loss") == []
    for method, path, body in writes:
        answer = httpx.request(method, backend.url + path, content=body,
                               headers={**backend.headers, **JSON_TYPE})  # fmt: skip
        assert answer.status_code in (200, 201), (method, path, answer.text)
    assert len(backend.records(rid, "loss")) == 3


# -- the session cookie behind TLS -------------------------------------------------------------

VIA_TLS_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def cookie_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    return answer.headers["set-cookie"].lower()


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(tmp_path: Path) -> None:
    """--trusted-proxy 127.0.0.1: a sign-in that the proxy says came over https (by the form or
    by ?token=) gets a Secure cookie; one over plain http does not."""
    server = Backend(tmp_path / "b", extra_args=["--trusted-proxy", "127.0.0.1"])
    try:
        form = {"token": server.token}
        secure = cookie_of(httpx.post(server.url + "/login", data=form, headers=VIA_TLS_PROXY))
        assert "; secure" in secure and "httponly" in secure and "samesite=strict" in secure
        link = httpx.get(f"{server.url}/?token={server.token}", headers=VIA_TLS_PROXY)
        assert "; secure" in cookie_of(link)
        assert "; secure" not in cookie_of(httpx.post(server.url + "/login", data=form))
    finally:
        server.stop()


@pytest.mark.parametrize("proxies", [[], ["--trusted-proxy", "10.1.2.3"]], ids=["none", "other"])
def test_forwarded_headers_from_an_untrusted_address_are_ignored(
    tmp_path: Path, proxies: list[str]
) -> None:
    """By default (and from an address not named by --trusted-proxy) X-Forwarded-Proto is not
    believed: a client on plain http cannot make the server think it is behind TLS."""
    server = Backend(tmp_path / "b", extra_args=proxies)
    try:
        answer = httpx.post(server.url + "/login", data={"token": server.token},
                            headers=VIA_TLS_PROXY)  # fmt: skip
        assert "; secure" not in cookie_of(answer)
    finally:
        server.stop()


def test_a_trusted_proxy_that_is_not_an_address_is_refused(tmp_path: Path, capsys: Any) -> None:
    """--trusted-proxy nginx: exit 1 with one line naming the value, before listening."""
    from markov_otel.server.options import main

    db = f"sqlite:///{tmp_path / 's.db'}"
    argv = ["--port", "0", "--db", db, "--token", "t", "--trusted-proxy", "nginx"]
    assert main(argv) == 1
    assert "--trusted-proxy 'nginx'" in capsys.readouterr().err


def test_an_http_parser_uvicorn_does_not_have_is_refused(tmp_path: Path) -> None:
    """serve(http="h2") raises a ConfigError naming the parsers there are, before listening."""
    from markov_otel.errors import ConfigError
    from markov_otel.server.runner import serve

    with pytest.raises(ConfigError, match="must be one of auto, httptools, h11"):
        serve(port=0, db=f"sqlite:///{tmp_path / 's.db'}", tokens=["t"], http="h2")


# -- wrong tokens slow an address down ---------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_delay_doubles_with_each_distinct_wrong_token_up_to_its_cap() -> None:
    """FREE_FAILURES distinct wrong tokens cost nothing; then 1, 2, 4 … s, capped at MAX_DELAY;
    the same wrong token again is not counted; the right token starts the address afresh."""
    clock = Clock()
    wrong = WrongTokens(clock)
    for i in range(FREE_FAILURES):
        wrong.failed("10.0.0.1", f"guess-{i}")
        assert wrong.wait("10.0.0.1") == 0
    waits = []
    for i in range(10):
        assert wrong.wait("10.0.0.1") == 0
        wrong.failed("10.0.0.1", f"more-{i}")
        waits.append(wrong.wait("10.0.0.1"))
        wrong.failed("10.0.0.1", f"more-{i}")  # the same token again: not a new guess
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 16, 32, MAX_DELAY, MAX_DELAY, MAX_DELAY, MAX_DELAY]
    assert wrong.wait("10.0.0.2") == 0
    wrong.failed("10.0.0.1", "yet another")
    assert wrong.wait("10.0.0.1") == MAX_DELAY
    clock.now += MAX_DELAY
    wrong.succeeded("10.0.0.1")
    wrong.failed("10.0.0.1", "a typo after signing in")
    assert wrong.wait("10.0.0.1") == 0


def test_an_address_is_forgotten_after_a_quiet_while() -> None:
    """An address in backoff that sends nothing wrong for FORGET_AFTER seconds starts afresh."""
    clock = Clock()
    wrong = WrongTokens(clock)
    for i in range(FREE_FAILURES + 3):
        wrong.failed("10.0.0.1", f"guess-{i}")
    assert wrong.wait("10.0.0.1") > 0
    clock.now += FORGET_AFTER + 1
    assert wrong.wait("10.0.0.1") == 0
    wrong.failed("10.0.0.1", "one more")
    assert wrong.wait("10.0.0.1") == 0


def from_address(backend: Backend, address: str) -> httpx.Client:
    """A client whose connections leave from `address` (any 127.x.y.z is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=backend.url, transport=transport, timeout=30)


@pytest.mark.slow
def test_wrong_tokens_from_one_address_get_429_but_the_right_token_still_gets_in(
    backend: Backend,
) -> None:
    """2,000 distinct wrong tokens from 127.0.0.3: the first FREE_FAILURES are checked (401),
    then 429 with Retry-After (at most a handful more are checked). Meanwhile the right token
    from 127.0.0.4 works at once, and from 127.0.0.3 once Retry-After has passed."""
    attacker, colleague = from_address(backend, "127.0.0.3"), from_address(backend, "127.0.0.4")
    with attacker, colleague:
        statuses = []
        for i in range(2000):
            answer = attacker.get("/api/v1/recordings", headers={"Authorization": f"Bearer g{i}"})
            statuses.append(answer.status_code)
        assert statuses[:FREE_FAILURES] == [401] * FREE_FAILURES
        assert set(statuses) == {401, 429}
        assert statuses.count(401) < FREE_FAILURES + 10, statuses.count(401)
        assert colleague.get("/api/v1/recordings", headers=backend.headers).status_code == 200
        # The delay holds for the right token too. Asked while at least 3 s of it remain (the
        # loop above may end just as a delay runs out): more wrong tokens until a 429 says so.
        # Each one checked doubles the delay, so this takes a few seconds (1 + 2 at most).
        guesses = (f"Bearer g{i}" for i in itertools.count(2000))

        def long_delay() -> bool:
            guess = attacker.get("/api/v1/recordings", headers={"Authorization": next(guesses)})
            return guess.status_code == 429 and int(guess.headers["Retry-After"]) >= 4

        until(long_delay, "a 429 with 4 s or more of delay left", seconds=MAX_DELAY + 30)
        slowed = attacker.get("/api/v1/recordings", headers=backend.headers)
        assert slowed.status_code == 429 and "wrong tokens" in slowed.json()["error"]
        wait = int(slowed.headers["Retry-After"])
        assert 1 <= wait <= MAX_DELAY
        deadline = time.monotonic() + MAX_DELAY + 30  # the promise: in by Retry-After
        while (
            answer := attacker.get("/api/v1/recordings", headers=backend.headers)
        ).status_code == 429:
            assert time.monotonic() < deadline, "the right token was locked out"
            time.sleep(int(answer.headers["Retry-After"]))
        assert answer.status_code == 200


def test_the_same_wrong_token_again_and_again_is_not_slowed_down(backend: Backend) -> None:
    """A stale cookie or an old key repeats one wrong token: 50 times, 50 plain 401s, no 429."""
    with from_address(backend, "127.0.0.5") as client:
        html = {"Accept": "text/html", "Cookie": "markov_token=stale"}
        statuses = [client.get("/", headers=html).status_code for _ in range(50)]
    assert statuses == [401] * 50


def test_wrong_tokens_posted_to_login_count_too(backend: Backend) -> None:
    """POST /login is slowed like the API: past FREE_FAILURES distinct wrong tokens the form
    answers 429 with Retry-After and sets no cookie, even for the right token."""
    with from_address(backend, "127.0.0.6") as client:
        for i in range(FREE_FAILURES + 1):
            assert client.post("/login", data={"token": f"g{i}"}).status_code == 401
        answer = client.post("/login", data={"token": backend.token})
        assert answer.status_code == 429 and "set-cookie" not in answer.headers
        assert int(answer.headers["Retry-After"]) >= 1 and "wrong tokens" in answer.text
