"""The REST API of protocol.md against the real backend, over SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id


def api(server: Backend, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{server.url}/api/v1{path}", headers=server.headers, **kwargs)  # type: ignore[arg-type]


def register(server: Backend, rid: str, **fields: object) -> httpx.Response:
    return api(server, "POST", "/recordings", json={"recording_id": rid, **fields})


def test_register_is_idempotent_on_recording_id(server: Backend) -> None:
    """Registering twice answers 201 then 200 with the same recording, model id and page URL."""
    rid = new_id()
    first = register(
        server, rid, name="r", project_id="p", model_id="model-abc", hyper_parameters={"lr": 0.1}
    )
    again = register(server, rid, name="other name")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["name"] == "r" and again.json()["model_id"] == "model-abc"
    assert first.json()["experiment_url"] == f"{server.url}/recordings/{rid}"
    assert first.json()["hyper_parameters"] == {"lr": 0.1}


def test_register_without_model_id_gets_one(server: Backend) -> None:
    """A registration without model_id is given a `model-<16 hex>` id."""
    answer = register(server, new_id())
    assert answer.status_code == 201
    model_id = answer.json()["model_id"]
    assert model_id.startswith("model-") and len(model_id) == len("model-") + 16


def test_patch_merges_and_appends_alerts_once(server: Backend) -> None:
    """PATCH merges hyperparameters/summary, sets status, appends alerts once per alert_id."""
    rid = new_id()
    register(server, rid, hyper_parameters={"lr": 0.1, "bs": 32})
    alert = {
        "alert_id": "a1",
        "metric_name": "loss",
        "operation": "gt",
        "threshold": 1.0,
        "text": "loss high",
        "value": 2.0,
        "step": 3,
        "time_unix_nano": 5,
    }
    body = {"hyper_parameters": {"bs": 64}, "summary": {"best": 0.2}, "alerts": [alert]}
    assert api(server, "PATCH", f"/recordings/{rid}", json=body).status_code == 200
    body = {
        "summary": {"last": 0.3},
        "status": "finished",
        "alerts": [alert, {**alert, "alert_id": "a2"}],
    }
    answer = api(server, "PATCH", f"/recordings/{rid}", json=body)
    assert answer.status_code == 200
    recording = answer.json()
    assert recording["hyper_parameters"] == {"lr": 0.1, "bs": 64}
    assert recording["summary"] == {"best": 0.2, "last": 0.3}
    assert recording["status"] == "finished"
    alerts = api(server, "GET", f"/recordings/{rid}/alerts").json()
    assert [a["alert_id"] for a in alerts] == ["a1", "a2"] and alerts[0] == alert


def test_a_failed_recording_stays_failed_until_resumed(server: Backend) -> None:
    """After `failed`, a PATCH of finished or terminated (the other ranks' ends) keeps it
    failed; `running` (a resume) leaves it, and then it can finish."""
    rid = new_id()
    register(server, rid)
    statuses = []
    for status in ("failed", "finished", "terminated", "running", "finished"):
        answer = api(server, "PATCH", f"/recordings/{rid}", json={"status": status})
        statuses.append(answer.json()["status"])
    assert statuses == ["failed", "failed", "failed", "running", "finished"]


def test_requirements_are_404_until_patched(server: Backend) -> None:
    """GET requirements is 404 before a PATCH stores environment.json, then returns it."""
    rid = new_id()
    register(server, rid)
    assert api(server, "GET", f"/recordings/{rid}/requirements").status_code == 404
    env = {"python": "3.11", "packages": {"numpy": "2.0"}}
    api(server, "PATCH", f"/recordings/{rid}", json={"requirements": env})
    assert api(server, "GET", f"/recordings/{rid}/requirements").json() == env


def test_list_is_newest_first_and_filters_by_project(server: Backend) -> None:
    """The list holds every recording newest first; ?project_id= keeps one project's."""
    project = new_id()
    ids = [new_id() for _ in range(3)]
    for rid in ids:
        register(server, rid, project_id=project)
    register(server, new_id(), project_id="elsewhere")
    listed = api(server, "GET", "/recordings", params={"project_id": project}).json()
    assert [r["recording_id"] for r in listed] == ids[::-1]
    assert len(api(server, "GET", "/recordings").json()) >= 4


def test_records_are_ordered_by_step_then_time(server: Backend) -> None:
    """Points sent out of order (repeated and decreasing steps) come back by step, then time."""
    rid = new_id()
    points = [("m", 2, 0.2, 30), ("m", 0, 0.0, 20), ("m", 1, 0.15, 50), ("m", 1, 0.1, 10)]
    body = metrics_json_bytes(rid, points)
    answer = httpx.post(
        f"{server.url}/v1/metrics",
        content=body,
        headers={**server.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200
    got = api(server, "GET", f"/recordings/{rid}/records", params={"key": "m"}).json()
    assert [(r["step"], r["time_unix_nano"]) for r in got] == [(0, 20), (1, 10), (1, 50), (2, 30)]


def test_unknown_and_invalid_ids_and_missing_key(server: Backend) -> None:
    """Unknown recordings are 404, ids outside the pattern 400, records without key 400."""
    assert api(server, "GET", f"/recordings/{new_id()}").status_code == 404
    assert api(server, "PATCH", f"/recordings/{new_id()}", json={}).status_code == 404
    assert api(server, "GET", "/recordings/..bad").status_code == 400
    assert register(server, "has/slash").status_code == 400
    assert register(server, "x" * 65).status_code == 400
    rid = new_id()
    register(server, rid)
    answer = api(server, "GET", f"/recordings/{rid}/records")
    assert answer.status_code == 400 and "key" in answer.json()["error"]


def test_wrong_field_types_are_400(server: Backend) -> None:
    """A registration or PATCH with a wrongly typed field is refused with the field's name."""
    answer = register(server, new_id(), name=5)
    assert answer.status_code == 400 and "name" in answer.json()["error"]
    rid = new_id()
    register(server, rid)
    answer = api(server, "PATCH", f"/recordings/{rid}", json={"alerts": [{"no_id": 1}]})
    assert answer.status_code == 400 and "alert_id" in answer.json()["error"]
    answer = api(server, "PATCH", f"/recordings/{rid}", content=b"[1, 2]")
    assert answer.status_code == 400
