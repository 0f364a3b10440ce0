"""A recording reads true: status never goes back from a batch, parameters have one form, and
lists and pages show when a run started, not when it was uploaded."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json, metrics_json_bytes, new_id, series

from markov_otel.rules import TERMINAL_STATUSES

JSON = {"Content-Type": "application/json"}


def api(server: Backend, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.url}/api/v1{path}", headers=server.headers, **kwargs)


def recording(server: Backend, rid: str) -> dict[str, Any]:
    answer = api(server, "GET", f"/recordings/{rid}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def post(server: Backend, signal: str, doc: dict[str, Any]) -> httpx.Response:
    body = json.dumps(doc).encode()
    return httpx.post(f"{server.url}/v1/{signal}", content=body, headers={**server.headers, **JSON})


def resource(rid: str, **attrs: Any) -> dict[str, Any]:
    pairs = {"markov.recording.id": rid, **attrs}
    return {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in pairs.items()]}


def span_batch(rid: str, status: str) -> dict[str, Any]:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "experiment run",
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}  # fmt: skip
    scope = {"spans": [span]}
    return {"resourceSpans": [{"resource": resource(rid, **{"markov.status": status}),
                               "scopeSpans": [scope]}]}  # fmt: skip


def log_batch(rid: str, status: str) -> dict[str, Any]:
    record = {"timeUnixNano": "3", "eventName": "markov.lifecycle"}
    return {"resourceLogs": [{"resource": resource(rid, **{"markov.status": status}),
                              "scopeLogs": [{"logRecords": [record]}]}]}  # fmt: skip


@pytest.mark.parametrize("final", sorted(TERMINAL_STATUSES))
@pytest.mark.slow
def test_a_late_batch_never_turns_a_terminal_status_back(server: Backend, final: str) -> None:
    """After the final PATCH, late metrics, spans and logs saying "running" leave the status."""
    rid = new_id()
    first = metrics_json_bytes(rid, series("x", 2), **{"markov.status": "running"})
    assert (
        httpx.post(
            f"{server.url}/v1/metrics", content=first, headers={**server.headers, **JSON}
        ).status_code
        == 200
    )
    assert api(server, "PATCH", f"/recordings/{rid}", json={"status": final}).status_code == 200
    late = metrics_json(rid, series("x", 1, start_ns=5), **{"markov.status": "running"})
    for signal, doc in (("metrics", late), ("traces", span_batch(rid, "running")),
                        ("logs", log_batch(rid, "running"))):  # fmt: skip
        assert post(server, signal, doc).status_code == 200, signal
        assert recording(server, rid)["status"] == final, signal
    assert recording(server, rid)["points"] == 3  # the late batch's data is kept
    resumed = api(server, "PATCH", f"/recordings/{rid}", json={"status": "running"})
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"


def test_a_batch_still_moves_a_running_recording_forward(server: Backend) -> None:
    """The last batch's resource status (finished) does end a running recording."""
    rid = new_id()
    assert post(server, "traces", span_batch(rid, "running")).status_code == 200
    assert recording(server, rid)["status"] == "running"
    assert post(server, "logs", log_batch(rid, "finished")).status_code == 200
    assert recording(server, rid)["status"] == "finished"


def test_parameters_have_one_flat_form_from_every_source(server: Backend) -> None:
    """Nested REST values and dotted resource attributes both read as one flat mapping."""
    rid = new_id()
    body = {"recording_id": rid, "hyper_parameters": {"opt": {"name": "sgd"}, "lr": 0.1},
            "metadata": {"data": {"split": {"train": 0.8}}}}  # fmt: skip
    assert api(server, "POST", "/recordings", json=body).status_code == 201
    doc = metrics_json(rid, series("x", 1), **{"markov.hparam.opt.name": "sgd",
                                                "markov.hparam.opt.momentum": 0.9})  # fmt: skip
    attrs = doc["resourceMetrics"][0]["resource"]["attributes"]
    kv = [{"key": "beta1", "value": {"doubleValue": 0.9}}]
    attrs.append({"key": "markov.hparam.adam", "value": {"kvlistValue": {"values": kv}}})
    attrs.append({"key": "markov.summary.best", "value": {"doubleValue": 0.5}})
    assert post(server, "metrics", doc).status_code == 200
    got = recording(server, rid)
    assert got["hyper_parameters"] == {
        "opt.name": "sgd", "lr": 0.1, "opt.momentum": 0.9, "adam.beta1": 0.9,
    }  # fmt: skip
    assert got["metadata"] == {"data.split.train": 0.8}
    patch = {"hyper_parameters": {"opt": {"name": "adam"}}, "summary": {"eval": {"acc": 0.7}}}
    answer = api(server, "PATCH", f"/recordings/{rid}", json=patch)
    assert answer.json()["hyper_parameters"]["opt.name"] == "adam"
    assert answer.json()["summary"] == {"best": 0.5, "eval.acc": 0.7}
    listed = {r["recording_id"]: r for r in api(server, "GET", "/recordings").json()}
    assert listed[rid]["hyper_parameters"] == answer.json()["hyper_parameters"]
    page = httpx.get(f"{server.url}/recordings/{rid}", headers=server.headers).text
    assert page.count(">opt.name<") == 1 and "{&#x27;name&#x27;" not in page
    assert "{'name'" not in page


def test_a_key_given_nested_and_dotted_at_once_is_400(server: Backend) -> None:
    """{"a.b": 1, "a": {"b": 2}} names one flat key twice: refused, saying which."""
    body = {"recording_id": new_id(), "hyper_parameters": {"a.b": 1, "a": {"b": 2}}}
    answer = api(server, "POST", "/recordings", json=body)
    assert answer.status_code == 400 and "a.b" in answer.json()["error"]


def test_lists_and_pages_go_by_the_recordings_own_start_time(server: Backend) -> None:
    """An offline run started earlier but uploaded later lists after a run started later."""
    project = new_id()
    late_start, early_start, unknown = new_id(), new_id(), new_id()
    register = [
        (late_start, "2025-05-01T05:12:00Z"),
        (early_start, "2025-05-01T07:09:00+02:00"),  # 05:09 UTC, registered after
        (unknown, None),  # no start: its upload time, now, which is newest
    ]
    for rid, started in register:
        body = {"recording_id": rid, "project_id": project, "started_at": started}
        assert api(server, "POST", "/recordings", json=body).status_code == 201
    listed = api(server, "GET", "/recordings", params={"project_id": project}).json()
    assert [r["recording_id"] for r in listed] == [unknown, late_start, early_start]
    assert listed[2]["started_at"] == "2025-05-01T05:09:00.000000+00:00"
    assert listed[0]["started_at"] is None and listed[0]["ended_at"] is None
    page = httpx.get(f"{server.url}/projects/{project}", headers=server.headers).text
    found = re.search(r'id="runs-data">(.*?)</script>', page)
    assert found is not None
    rows = json.loads(found.group(1))["runs"]  # the runs table's rows, as listed
    assert [r["id"] for r in rows] == [unknown, late_start, early_start]
    assert [r["start"][:16] for r in rows[1:]] == ["2025-05-01T05:12", "2025-05-01T05:09"]
    page = httpx.get(f"{server.url}/recordings/{early_start}", headers=server.headers).text
    assert "2025-05-01 05:09" in page


def test_start_and_end_times_come_from_resources_and_patches(server: Backend) -> None:
    """Resource times fill a recording that has none; a PATCH sets them; bad times are 400."""
    rid = new_id()
    times = {"markov.recording.started_at": "2025-05-01T05:09:00Z",
             "markov.recording.ended_at": "2025-05-01T06:00:00Z"}  # fmt: skip
    body = metrics_json_bytes(rid, series("x", 1), **times)
    headers = {**server.headers, **JSON}
    assert httpx.post(f"{server.url}/v1/metrics", content=body, headers=headers).status_code == 200
    got = recording(server, rid)
    assert (got["started_at"], got["ended_at"]) == (
        "2025-05-01T05:09:00.000000+00:00", "2025-05-01T06:00:00.000000+00:00",
    )  # fmt: skip
    other = {"markov.recording.started_at": "2030-01-01T00:00:00Z"}
    body = metrics_json_bytes(rid, series("y", 1), **other)
    assert httpx.post(f"{server.url}/v1/metrics", content=body, headers=headers).status_code == 200
    assert recording(server, rid)["started_at"] == "2025-05-01T05:09:00.000000+00:00"
    answer = api(server, "PATCH", f"/recordings/{rid}", json={"ended_at": "2025-05-01T07:00Z"})
    assert answer.json()["ended_at"] == "2025-05-01T07:00:00.000000+00:00"
    for bad in ("yesterday", "2025-05-01T05:09:00", 1746076140):
        answer = api(server, "PATCH", f"/recordings/{rid}", json={"started_at": bad})
        assert answer.status_code == 400 and "started_at" in answer.json()["error"], bad


def test_a_scoped_token_gets_the_same_404_for_another_projects_id_as_for_none(
    tmp_path: Any,
) -> None:
    """Every read and PATCH route: another project's recording answers like a missing one."""
    server = Backend(tmp_path / "scoped", token="admin", extra_args=["--token", "team:alpha"])
    try:
        theirs = new_id()
        body = {"recording_id": theirs, "project_id": "beta", "notes": "secret"}
        assert api(server, "POST", "/recordings", json=body).status_code == 201
        scoped = {"Authorization": "Bearer team"}
        routes = [("GET", ""), ("GET", "/records?key=x"), ("GET", "/alerts"),
                  ("GET", "/requirements"), ("PATCH", "")]  # fmt: skip
        for method, suffix in routes:
            answers = []
            for rid in (theirs, new_id()):
                answer = httpx.request(
                    method, f"{server.url}/api/v1/recordings/{rid}{suffix}",
                    json={"notes": "mine"} if method == "PATCH" else None, headers=scoped,
                )  # fmt: skip
                assert answer.status_code == 404, (method, suffix, answer.status_code)
                answers.append(re.sub(r"'[0-9a-f]{32}'", "'ID'", answer.text))
            assert answers[0] == answers[1], (method, suffix)
        assert recording(server, theirs)["notes"] == "secret"
    finally:
        server.stop()
