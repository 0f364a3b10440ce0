"""Two projects racing to create one new recording id: one wins, the other is refused, always.

Two backend processes share one database (SQLite file or PostgreSQL), each request of a pair goes
to a different process at the same instant, so only the database can keep the check (who owns
the id) and the write (create it, store points) together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id, series

TRIES = 60
ADMIN = "admin"
TOKENS = ["--token", "team-a:projA", "--token", "team-b:projB"]
Send = Callable[[httpx.Client, str, str, int], httpx.Response]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def twins(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Backend]]:
    """Two backend processes over the same database."""
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_url")
    else:
        db = f"sqlite:///{tmp_path / 'shared.db'}"
    first = Backend(tmp_path / "one", token=ADMIN, db=db, extra_args=TOKENS)
    second = Backend(tmp_path / "two", token=ADMIN, db=db, extra_args=TOKENS)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def by_register(client: httpx.Client, rid: str, project: str, n: int) -> httpx.Response:
    """Register with a name and hyperparameters that say who sent them."""
    body = {"recording_id": rid, "project_id": project, "name": f"by-{project}",
            "hyper_parameters": {"owner": project}}  # fmt: skip
    return client.post("/api/v1/recordings", json=body)


def by_metrics(client: httpx.Client, rid: str, project: str, n: int) -> httpx.Response:
    """Create through the first metrics batch: n points, resource naming the project."""
    resource = {"markov.project.id": project, "markov.recording.name": f"by-{project}",
                "markov.hparam.owner": project}  # fmt: skip
    body = metrics_json_bytes(rid, series("x", n), **resource)
    return client.post("/v1/metrics", content=body, headers={"Content-Type": "application/json"})


def race_once(
    clients: dict[str, httpx.Client], sends: dict[str, tuple[Send, int]], rid: str
) -> dict[str, httpx.Response]:
    """Both projects send for `rid` at the same instant (a barrier); their answers."""
    barrier = threading.Barrier(len(clients))
    answers: dict[str, httpx.Response] = {}

    def go(project: str) -> None:
        send, n = sends[project]
        barrier.wait()
        answers[project] = send(clients[project], rid, project, n)

    threads = [threading.Thread(target=go, args=(project,)) for project in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def problems(rid: str, answers: dict[str, httpx.Response], stored: dict[str, Any],
             sends: dict[str, tuple[Send, int]]) -> list[str]:  # fmt: skip
    """What is wrong with one race's outcome: not exactly one winner, or foreign data stored."""
    won = [p for p, r in answers.items() if r.status_code in (200, 201)]
    lost = [p for p, r in answers.items() if r.status_code == 403]
    if len(won) != 1 or len(lost) != 1:
        return [f"{rid}: {[(p, r.status_code) for p, r in answers.items()]}"]
    winner = won[0]
    expected = {"project_id": winner, "name": f"by-{winner}",
                "hyper_parameters": {"owner": winner}}  # fmt: skip
    got = {k: stored[k] for k in expected}
    send, n = sends[winner]
    points = n if send is by_metrics else 0
    found = [f"{rid}: won by {winner}, stored {got}"] if got != expected else []
    if stored["points"] != points:
        found.append(f"{rid}: won by {winner}, {stored['points']} points stored, not {points}")
    return found


def race(twins: tuple[Backend, Backend], send_a: Send, send_b: Send) -> list[str]:
    """TRIES races for fresh ids, each project on its own server; every broken outcome."""
    one, two = twins
    sends = {"projA": (send_a, 3), "projB": (send_b, 5)}
    broken: list[str] = []
    with (
        httpx.Client(base_url=one.url, headers={"Authorization": "Bearer team-a"}) as a,
        httpx.Client(base_url=two.url, headers={"Authorization": "Bearer team-b"}) as b,
        httpx.Client(base_url=one.url, headers=one.headers) as admin,
    ):
        for _ in range(TRIES):
            rid = new_id()
            answers = race_once({"projA": a, "projB": b}, sends, rid)
            stored = admin.get(f"/api/v1/recordings/{rid}").json()
            broken += problems(rid, answers, stored, sends)
    return broken


@pytest.mark.parametrize(
    ("send_a", "send_b"),
    [(by_register, by_register), (by_metrics, by_metrics), (by_register, by_metrics)],
    ids=["register-register", "metrics-metrics", "register-metrics"],
)
@pytest.mark.slow
def test_racing_projects_never_both_win_a_new_id(
    twins: tuple[Backend, Backend], send_a: Send, send_b: Send
) -> None:
    """In every race exactly one project gets the id; its recording holds only its own data."""
    assert race(twins, send_a, send_b) == []
