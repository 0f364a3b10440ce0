"""Property-based fuzzing of the whole backend in-process: every answer is below 500.

Two properties, drawn by hypothesis (strategies in hostile_requests.py) and sent to the real
ASGI app over `httpx.ASGITransport`, on a real SQLite file (and PostgreSQL when configured):

- well-formed OTLP (JSON, protobuf) and REST bodies with one hostile field each, sent with a
  valid token to the route they belong to, so they reach the rules, the store and the reads;
- anything on any route: method, path (ids of this tenant, of another, fresh, garbage), query,
  token, content type and encoding, Idempotency-Key, and any body (random bytes, any JSON, deep
  nesting, the bodies above, gzip of them).

The app raises its own exceptions into the test (`raise_app_exceptions`), so a crash fails with
its traceback. Bounded by the example counts; `--hypothesis-show-statistics` prints the size.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from backend_fixture import schema_of_its_own
from hostile_requests import (
    JSON,
    MINE,
    PROJECT,
    PROTOBUF,
    THEIRS,
    WEIGHTED_WRITES,
    WRITES,
    any_body,
    any_text,
    dumps,
    hostile_id,
    writable_id,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_examples import examples
from own_loop import LoopThread

from markov_otel.server import create_app

# Each write example also reads the pages back, and reads right after a write are paced (the
# read lane, lanes.py: ~0.3 s an example, 260 s of the suite's 1700 at 400 examples over both
# databases); the write kinds are weighted, so 100 examples still send each several times. A
# hunt draws ten times as many: --hypothesis-profile=deep (hypothesis_examples.py).
WRITE_EXAMPLES = examples(100)
ANY_EXAMPLES = examples(400)  # ~0.03 s an example
TOKENS = {"admin": "Bearer admin", "scoped": "Bearer team", "wrong": "Bearer nope", "none": None}
ADMIN = {"Authorization": "Bearer admin"}
FUZZ = settings(
    deadline=None,
    database=None,
    # one app and database for the whole run, on purpose: state builds up as in a real server
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip


class Harness:
    """The real app on a real database, driven in-process on one event loop."""

    def __init__(self, db: str, files: Path) -> None:
        self.app = create_app(db=db, tokens=["admin", f"team:{PROJECT}"], artifacts=str(files))
        self.loop = LoopThread()  # Playwright's loop may hold this process's main thread
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://fuzz"
        )
        for rid, project in ((MINE, PROJECT), (THEIRS, "projB")):
            body = dumps({"recording_id": rid, "project_id": project})
            answer = self.send("POST", "/api/v1/recordings", {}, ADMIN, body)
            assert answer.status_code in (200, 201), answer.text

    def send(
        self, method: str, path: str, query: dict[str, str], headers: Any, payload: bytes
    ) -> httpx.Response:
        call = self.client.request(method, path, params=query, headers=headers, content=payload)
        return self.loop.run(call)

    def check_reads(self) -> None:
        """The full list and both seeded recordings still read for the admin."""
        listed = self.send("GET", "/api/v1/recordings", {}, ADMIN, b"")
        assert listed.status_code == 200, listed.text[:300]
        assert {MINE, THEIRS} <= {r["recording_id"] for r in listed.json()}
        for rid in (MINE, THEIRS):
            one = self.send("GET", f"/api/v1/recordings/{rid}", {}, ADMIN, b"")
            assert one.status_code == 200, one.text[:300]
        assert self.send("GET", "/", {}, ADMIN, b"").status_code == 200

    def close(self) -> None:
        self.loop.run(self.client.aclose())
        self.app.state.store.close()
        self.loop.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The harness on a new SQLite file, or in a new PostgreSQL schema (dropped after), so
    every read walks only what this run stored."""
    if request.param == "sqlite":
        running = Harness(str(tmp_path / "fuzz.db"), tmp_path / "files")
        yield running
        running.close()
        return
    with schema_of_its_own(request.getfixturevalue("postgres_url"), "fuzz") as db:
        running = Harness(db, tmp_path / "files")
        yield running
        running.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # a fixed number of examples: CPU-bound, ~5x slower on a loaded CI
@settings(FUZZ, max_examples=WRITE_EXAMPLES)
@given(
    write=st.sampled_from(WEIGHTED_WRITES).flatmap(
        lambda name: st.tuples(st.just(name), WRITES[name][2])
    ),
    token=st.sampled_from(["admin", "scoped"]),
    key=st.sampled_from([None, None, None, "k", f"{MINE}:w:metrics:0"]),
)
def test_well_formed_bodies_with_a_hostile_field_never_get_a_server_error(
    harness: Harness, write: tuple[str, bytes], token: str, key: str | None
) -> None:
    """OTLP and REST bodies of the right shape, one field hostile (numbers past int64, lone
    surrogates, NUL, long or deep values, bad times, another project's id), valid token:
    the answer is < 500 and every read still works."""
    name, payload = write
    method, path, _ = WRITES[name]
    headers = {
        "Authorization": TOKENS[token],
        "Content-Type": PROTOBUF if "protobuf" in name else JSON,
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = harness.send(method, path, {}, headers, payload)
    event(f"{name}: {answer.status_code}")
    assert answer.status_code < 500, (name, answer.status_code, answer.text[:300])
    harness.check_reads()


ROUTES = {
    "/v1/metrics": ("POST",), "/v1/traces": ("POST",), "/v1/logs": ("POST",),
    "/api/v1/recordings": ("GET", "POST"), "/api/v1/recordings/{id}": ("GET", "PATCH"),
    "/api/v1/recordings/{id}/records": ("GET",), "/api/v1/recordings/{id}/alerts": ("GET",),
    "/api/v1/recordings/{id}/requirements": ("GET",), "/api/v1/limits": ("GET",),
    "/": ("GET",), "/projects/{id}": ("GET",), "/recordings/{id}": ("GET",),
    "/healthz": ("GET",), "/openapi.json": ("GET",), "/static/page.css": ("GET",),
}  # fmt: skip
CONTENT_TYPES = [JSON, PROTOBUF, "application/protobuf", "application/json; charset=utf-8",
                 "text/plain", ""]  # fmt: skip
header_bytes = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=600).map(
    lambda s: s.strip().encode("latin-1")
)
usual = st.integers(0, 3).map(bool)  # True three times in four: what a real client sends


@st.composite
def any_request(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, bytes], bytes]:
    route = draw(st.sampled_from(sorted(ROUTES)))
    event(f"route {route}")
    rid = draw(writable_id | hostile_id).encode("utf-8", "surrogatepass")
    path = route.replace("{id}", quote(rid, safe=""))
    methods = ROUTES[route] if draw(usual) else ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD")
    query = draw(st.dictionaries(st.sampled_from(["key", "project_id", "token"]), any_text,
                                 max_size=2))  # fmt: skip
    query = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
             for k, v in query.items()}  # fmt: skip
    headers: dict[str, bytes] = {}
    token = TOKENS[draw(st.sampled_from(["admin", "scoped"] if draw(usual) else sorted(TOKENS)))]
    if token:
        headers["Authorization"] = token.encode()
    headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES).map(str.encode) | header_bytes)
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(header_bytes | st.sampled_from([b"k", b"k:metrics:0"]))
    payload = draw(any_body)
    encoding = draw(st.sampled_from([None, "gzip", "identity", "br"]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding.encode()
        if encoding == "gzip" and draw(st.booleans()):
            payload = gzip.compress(payload)
    headers = {k: v for k, v in headers.items() if v}  # an empty header value is not sendable
    return draw(st.sampled_from(methods)), path, query, headers, payload


@pytest.mark.slow
@pytest.mark.timeout(900)  # a fixed number of examples: CPU-bound, ~5x slower on a loaded CI
@settings(FUZZ, max_examples=ANY_EXAMPLES)
@given(drawn=any_request())
def test_any_request_on_any_route_never_gets_a_server_error(
    harness: Harness, drawn: tuple[str, str, dict[str, str], dict[str, bytes], bytes]
) -> None:
    """Any method, path, query, token, content type, encoding, key and body: < 500, and after
    an accepted write every read still works."""
    method, path, query, headers, payload = drawn
    answer = harness.send(method, path, query, headers, payload)
    event(f"status {answer.status_code}")
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])
    if method in ("POST", "PATCH") and answer.status_code < 300:
        harness.check_reads()
