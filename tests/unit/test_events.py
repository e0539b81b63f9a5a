"""Live task events (SSE), queue position and ETA: the ingress app under TestClient with a real
SQLite task store (see `make_context`); the test thread plays the runner, writing to the store
while the stream is open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api import events as events_module
from serve_app.api.deps import IngressContext
from serve_app.ingress import app
from serve_app.tasks import TaskStore
from tests.support.ingress import ingress_context


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IngressContext]:
    monkeypatch.setattr(events_module, "POLL_S", 0.02)
    with ingress_context(tmp_path, {"max_active": 50}) as context:
        yield context


def _read_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    """The next `count` events of an SSE stream: {id, event, data}."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "event" in current:
            found.append(current)
            current = {}
            if len(found) == count:
                break
    return found


def _submit(client: TestClient) -> str:
    return str(client.post("/v1/generate", json={"prompt": "a desk", "seed": 1}).json()["task_id"])


def _finish(tasks: TaskStore, task_id: str) -> None:
    record = tasks.queue.claim(task_id, "runner", 30)
    assert record is not None and record.lease_owner
    assert tasks.queue.complete(task_id, record.lease_owner, {"caption": "a desk"})


def test_events_follow_a_task_from_the_queue_to_its_result(ctx: IngressContext) -> None:
    client = TestClient(app)
    ahead = _submit(client)
    task_id = _submit(client)
    with client.stream("GET", f"/v1/tasks/{task_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        [queued] = _read_events(lines, 1)
        assert queued["event"] == "progress" and queued["data"]["status"] == "queued"
        assert queued["data"]["queue_position"] == 1, "one task ahead of it"
        _finish(ctx.tasks, ahead)
        [moved] = _read_events(lines, 1)
        assert moved["data"]["queue_position"] == 0 and moved["id"] > queued["id"]
        assert moved["data"]["eta_s"] is not None, "an ETA once a task has been timed"
        record = ctx.tasks.queue.claim(task_id, "runner", 30)
        assert record is not None and record.lease_owner
        ctx.tasks.set_progress(task_id, "generating", 3, 10)
        [running] = _read_events(lines, 1)
        assert (
            running["data"] | {"status": "processing", "stage": "generating", "step": 3, "total_steps": 10}
            == (running["data"])
        )
        assert "queue_position" not in running["data"]
        assert ctx.tasks.queue.complete(task_id, record.lease_owner, {"caption": "a desk"})
        [result] = _read_events(lines, 1)
        assert result["event"] == "result" and result["data"]["status"] == "done"
        assert result["data"]["caption"] == "a desk" and result["id"] > running["id"]
        assert list(lines) == [], "the stream ends after the result"


def test_a_resumed_stream_sends_only_what_is_newer(ctx: IngressContext) -> None:
    client = TestClient(app)
    task_id = _submit(client)
    _finish(ctx.tasks, task_id)
    with client.stream("GET", f"/v1/tasks/{task_id}/events") as stream:
        [result] = _read_events(stream.iter_lines(), 1)
    assert result["event"] == "result"
    seen = {"Last-Event-ID": str(result["id"])}
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=seen) as stream:
        assert _read_events(stream.iter_lines(), 1) == [], "already seen: nothing but the close"
    earlier = {"Last-Event-ID": str(result["id"] - 1)}
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=earlier) as stream:
        assert [e["event"] for e in _read_events(stream.iter_lines(), 1)] == ["result"]
    garbage = {"Last-Event-ID": "not-a-number"}
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=garbage) as stream:
        assert [e["event"] for e in _read_events(stream.iter_lines(), 1)] == ["result"]


def test_a_task_that_ends_in_the_millisecond_of_its_last_progress_still_sends_its_result(
    ctx: IngressContext,
) -> None:
    """A client that saw the last progress event (its id from that write's millisecond) and
    reconnects after the task ended in the same millisecond gets the result, not an endless close."""
    client = TestClient(app)
    task_id = _submit(client)
    record = ctx.tasks.queue.claim(task_id, "runner", 30)
    assert record is not None and record.lease_owner
    ctx.tasks.set_progress(task_id, "storing")
    progress_record, stats = ctx.tasks.view(task_id, None)
    seen = events_module.event_id(progress_record, stats)
    ctx.tasks.queue.complete(task_id, record.lease_owner, {"caption": "a desk"})
    with ctx.tasks.db.tx() as tx:  # the same millisecond, as a fast runner writes them
        tx.run("UPDATE tasks SET updated_at = ? WHERE task_id = ?", (progress_record.updated_at, task_id))
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": str(seen)}) as stream:
        assert [e["event"] for e in _read_events(stream.iter_lines(), 1)] == ["result"]


def test_unknown_task_is_404_before_any_stream(ctx: IngressContext) -> None:
    response = TestClient(app).get("/v1/tasks/nope/events")
    assert response.status_code == 404 and response.json()["error_code"] == "TASK_NOT_FOUND"


def test_poll_shows_the_queue_position(ctx: IngressContext) -> None:
    client = TestClient(app)
    first, second = _submit(client), _submit(client)
    assert client.get(f"/v1/result/{first}").json()["queue_position"] == 0
    assert client.get(f"/v1/result/{second}").json()["queue_position"] == 1
    _finish(ctx.tasks, first)
    body = client.get(f"/v1/result/{second}").json()
    assert body["queue_position"] == 0 and body["eta_s"] >= 0
    assert "queue_position" not in client.get(f"/v1/result/{first}").json(), "not once it ended"
