"""Open runs tables share their reads: concurrent identical polls cost the store's reads of one
poll, and sharing never hides a change, from this process or from another worker.

The reads are counted by the store itself (`SqlStore.reads`, every cursor a read begins), on the
real app over a real SQLite file, driven in-process so that the polls are truly concurrent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_fixture import Backend
from otlp_bodies import metrics_json_bytes, new_id
from own_loop import LoopThread

from markov_otel.server.app import create_app

T0 = 1_700_000_000_000_000_000
ADMIN = {"Authorization": "Bearer admin"}
TABLE = "/api/v1/runs-table"
POLLS = 20


class InProcess:
    """The real app on a SQLite file, its requests on one event loop."""

    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app(db=f"sqlite:///{tmp_path / 't.db'}", tokens=["admin"])
        self.store: Any = self.app.state.store
        self.loop = LoopThread()  # Playwright's loop may hold this process's main thread
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://table")

    def run(self, project: str, steps: int = 3, first: int = 0) -> str:
        """A recording of `project` with `steps` points of loss from step `first`."""
        rid = new_id()
        self.send_points(rid, project, steps, first)
        return rid

    def send_points(self, rid: str, project: str, steps: int, first: int = 0) -> None:
        points = [("loss", s, 1.0 / (s + 1), T0 + s) for s in range(first, first + steps)]
        body = metrics_json_bytes(rid, points, **{"markov.project.id": project})
        headers = {**ADMIN, "Content-Type": "application/json"}
        answer = self.call(self.client.post("/v1/metrics", content=body, headers=headers))
        assert answer.status_code == 200, answer.text

    def polls(self, n: int, params: dict[str, str]) -> list[httpx.Response]:
        """`n` polls of the runs table, all sent at once."""

        async def together() -> list[httpx.Response]:
            asks = [self.client.get(TABLE, params=params, headers=ADMIN) for _ in range(n)]
            return list(await asyncio.gather(*asks))

        return self.call(together())

    def call(self, work: Any) -> Any:
        return self.loop.run(work)

    def close(self) -> None:
        self.call(self.client.aclose())
        self.store.close()
        self.loop.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InProcess]:
    harness = InProcess(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def reads_of(app: InProcess, n: int, params: dict[str, str]) -> tuple[int, list[httpx.Response]]:
    before = app.store.reads
    answers = app.polls(n, params)
    return app.store.reads - before, answers


@pytest.mark.parametrize("delta", [False, True], ids=["whole", "since"])
def test_concurrent_identical_polls_cost_the_store_reads_of_one(
    app: InProcess, delta: bool
) -> None:
    """Twenty runs tables polling one project at once (whole, or since one cursor) begin as
    many store reads as one table polling another project of the same shape, and all get
    the same answer."""
    alone, crowded = new_id(), new_id()
    for project in (alone, crowded):
        app.run(project)
        app.run(project)
    asks = {p: {"project_id": p} for p in (alone, crowded)}
    for ask in asks.values() if delta else ():  # each table's own cursor
        ask["since"] = app.polls(1, dict(ask))[0].json()["cursor"]
    one, [single] = reads_of(app, 1, asks[alone])
    many, answers = reads_of(app, POLLS, asks[crowded])
    assert single.status_code == 200 and len(single.json()["runs"]) == 2
    assert one >= 2  # the state, then the rows: counted for real
    assert many == one
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1 and len({a.headers["etag"] for a in answers}) == 1


def test_a_batch_after_shared_polls_shows_in_the_next_poll(app: InProcess) -> None:
    """After concurrent polls answered by one read, a batch into one run is in the very next
    poll (a 200 with the run's new point count), not held back by the shared answer."""
    project = new_id()
    busy = app.run(project)
    app.run(project)
    first = app.polls(POLLS, {"project_id": project})
    tag, cursor = first[0].headers["etag"], first[0].json()["cursor"]
    app.send_points(busy, project, 2, first=3)
    asked = {"project_id": project, "since": cursor}
    revalidating = {**ADMIN, "If-None-Match": tag}
    after = app.call(app.client.get(TABLE, params=asked, headers=revalidating))
    assert after.status_code == 200
    points = {r["id"]: r["points"] for r in after.json()["runs"]}  # and rows of the overlap
    assert points[busy] == 5


@pytest.mark.postgres
@pytest.mark.slow
def test_with_two_workers_each_change_shows_in_the_next_poll_whichever_worker_answers(
    tmp_path: Path, own_schema: str
) -> None:
    """mkv serve --workers 2 on PostgreSQL: after each of ten renames (sent on a connection of
    its own, so to either worker) a new connection's poll, answered by either worker with
    what it has kept, shows the new name at once."""
    server = Backend(tmp_path / "workers", db=own_schema, extra_args=["--workers", "2"])
    try:
        project, rid = new_id(), new_id()
        body = metrics_json_bytes(rid, [("loss", 0, 1.0, T0)], **{"markov.project.id": project})
        headers = {**server.headers, "Content-Type": "application/json"}
        assert httpx.post(server.url + "/v1/metrics", content=body, headers=headers).is_success
        url, since = server.url + TABLE, None
        for n in range(10):
            renamed = httpx.patch(
                f"{server.url}/api/v1/recordings/{rid}", json={"name": f"n{n}"},
                headers=server.headers,
            )  # fmt: skip
            assert renamed.status_code == 200, renamed.text
            params = {"project_id": project} | ({} if since is None else {"since": since})
            answer = httpx.get(url, params=params, headers=server.headers).json()
            assert [r["name"] for r in answer["runs"]] == [f"n{n}"]
            since = answer["cursor"]
    finally:
        server.stop()
