"""Refusals that must never be 500s: malformed bodies (400), too large (413), wrong type (415)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Backend]:
    """A backend that takes bodies of at most 4096 bytes."""
    server = Backend(tmp_path / "small", extra_args=["--max-body-bytes", "4096"])
    yield server
    server.stop()


def test_large_bodies_are_413(small: Backend) -> None:
    """A body over the limit, plain or as a small gzip that inflates past it, answers 413."""
    big = metrics_json_bytes(new_id(), series("x", 100))
    assert len(big) > 4096
    headers = {**small.headers, **JSON}
    assert httpx.post(small.url + "/v1/metrics", content=big, headers=headers).status_code == 413
    bomb = gzip.compress(b" " * 1_000_000)
    answer = httpx.post(
        small.url + "/v1/metrics", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert len(bomb) < 4096 and answer.status_code == 413
    rest = httpx.post(
        small.url + "/api/v1/recordings", content=b"{" + b" " * 5000 + b"}", headers=headers
    )
    assert rest.status_code == 413


MALFORMED = [
    (JSON, b"not json"),
    (JSON, b"[1, 2]"),
    (JSON, b'{"resourceMetrics": 5}'),
    (JSON, b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {}}]}]}]}'),
    (
        JSON,
        b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "gauge": '
        b'{"dataPoints": [{"asDouble": "nope", "attributes": []}]}}]}]}]}',
    ),
    (
        JSON,
        b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "gauge": '
        b'{"dataPoints": [{"asDouble": 1, "attributes": [{"key": "markov.step", '
        b'"value": {"intValue": "one"}}]}]}}]}]}]}',
    ),
    (JSON, b"\xff\xfe"),
    (PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f"),
    (PROTOBUF, b"garbage that is not protobuf \x00\x01"),
]


@pytest.mark.parametrize(("ctype", "body"), MALFORMED)
def test_malformed_metrics_are_400_with_a_reason(
    backend: Backend, ctype: dict[str, str], body: bytes
) -> None:
    """A malformed OTLP body answers 400 and says why."""
    answer = httpx.post(
        backend.url + "/v1/metrics", content=body, headers={**backend.headers, **ctype}
    )
    assert answer.status_code == 400
    if ctype == JSON:
        assert answer.json()["message"]


def test_bad_gzip_and_unknown_types_are_refused(backend: Backend) -> None:
    """A body that claims gzip but is not is 400; an unknown Content-Type or encoding is 415."""
    url, headers = backend.url + "/v1/metrics", {**backend.headers, **JSON}
    answer = httpx.post(url, content=b"plain", headers={**headers, "Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "gzip" in answer.json()["message"]
    answer = httpx.post(
        url, content=b"{}", headers={**backend.headers, "Content-Type": "text/plain"}
    )
    assert answer.status_code == 415
    answer = httpx.post(url, content=b"{}", headers={**headers, "Content-Encoding": "br"})
    assert answer.status_code == 415


def test_traces_and_logs_malformed_are_400(backend: Backend) -> None:
    """Traces and logs bodies that do not parse answer 400, in both encodings."""
    for signal in ("traces", "logs"):
        url = f"{backend.url}/v1/{signal}"
        assert (
            httpx.post(url, content=b"{]", headers={**backend.headers, **JSON}).status_code == 400
        )
        answer = httpx.post(url, content=b"\x0a\xff", headers={**backend.headers, **PROTOBUF})
        assert answer.status_code == 400


def test_kill_and_restart_keeps_data_and_port(backend: Backend) -> None:
    """After SIGKILL and restart the backend is on the same port with every committed point."""
    rid, port = new_id(), backend.port
    body = metrics_json_bytes(rid, series("x", 100))
    assert (
        httpx.post(
            backend.url + "/v1/metrics", content=body, headers={**backend.headers, **JSON}
        ).status_code
        == 200
    )
    backend.kill()
    with pytest.raises(httpx.ConnectError):
        httpx.get(backend.url + "/healthz")
    backend.restart()
    assert backend.port == port
    got = httpx.get(
        f"{backend.url}/api/v1/recordings/{rid}/records",
        params={"key": "x"},
        headers=backend.headers,
    ).json()
    assert len(got) == 100


def test_limits_are_discoverable_and_named_by_the_413(small: Backend) -> None:
    """GET /api/v1/limits (token required) gives the rules and the body limit the 413 names."""
    from markov_otel import rules

    url = small.url + "/api/v1/limits"
    assert httpx.get(url).status_code == 401
    limits = httpx.get(url, headers=small.headers).json()
    assert limits == {
        "max_body_bytes": 4096,
        "max_artifact_bytes": rules.DEFAULT_MAX_ARTIFACT_BYTES,
        "artifact_part_bytes": 4096,  # a part of an upload is a body: never over the limit
        "max_name_bytes": rules.MAX_NAME_BYTES,
        "max_text_bytes": rules.MAX_TEXT_BYTES,
        "max_params_bytes": rules.MAX_PARAMS_BYTES,
        "max_depth": rules.MAX_DEPTH,
        "max_idempotency_key": rules.MAX_IDEMPOTENCY_KEY,
    }
    big = metrics_json_bytes(new_id(), series("x", 100))
    answer = httpx.post(small.url + "/v1/metrics", content=big, headers={**small.headers, **JSON})
    assert answer.status_code == 413
    assert "4096" in answer.json()["message"] and "max_body_bytes" in answer.json()["message"]


def test_a_body_of_exactly_max_body_bytes_is_taken(small: Backend) -> None:
    """A body of exactly the limit is stored; one byte more is 413. Mutant: `>=` for `>`."""
    rid = new_id()
    body = metrics_json_bytes(rid, [("loss", 0, 0.5, 1_700_000_000_000_000_000)])
    headers = {**small.headers, "Content-Type": "application/json"}
    exact = body + b" " * (4096 - len(body))  # JSON may end in whitespace
    over = exact + b" "
    url = small.url + "/v1/metrics"
    assert httpx.post(url, content=over, headers=headers).status_code == 413
    assert httpx.post(url, content=exact, headers=headers).status_code == 200
    assert [r["step"] for r in small.records(rid, "loss")] == [0]
