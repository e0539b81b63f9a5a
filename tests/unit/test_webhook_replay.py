"""POST /v1/tasks/{task_id}/webhook over HTTP (the ingress in-process): each replay makes the
server POST to a URL the caller chose, so replays are bounded per caller and per task, with a
429 and Retry-After in the routes' error shape past either bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api.deps import IngressContext
from serve_app.ingress import app
from serve_app.settings import Settings
from tests.support.ingress import ingress_context

SECRET = "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldC0xMjM0NTY3ODkw"
REPLAY = {"replay": {"per_caller_per_minute": 3, "max_per_task": 2}}


def _finished_with_webhook(ctx: IngressContext, task_id: str, key_id: str | None = None) -> None:
    ctx.tasks.create(task_id, kind="desk", request={}, webhook_url="https://example.com/hook", key_id=key_id)
    record = ctx.tasks.queue.claim(task_id, "runner", 30)
    assert record is not None and record.lease_owner
    ctx.tasks.queue.complete(task_id, record.lease_owner, {})
    assert ctx.tasks.outbox.claim(task_id, lease_s=60) is not None
    ctx.tasks.outbox.finish(task_id, delivered=True, attempts=1)


def _refused(response: Any, code: str, most_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error_code"] == code and set(response.json()) == {"error_code", "message"}
    assert 1 <= int(response.headers["retry-after"]) <= most_s


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    settings = Settings(imagegen_webhook_secret=SECRET)
    with ingress_context(tmp_path, {"max_active": 8}, settings=settings, webhooks=REPLAY) as context:
        yield context
    app.openapi_schema = None


def test_replays_are_bounded_per_task_and_per_caller(ctx: IngressContext) -> None:
    client = TestClient(app)
    for task_id in ("a", "b", "c"):
        _finished_with_webhook(ctx, task_id)
    assert [client.post("/v1/tasks/a/webhook").status_code for _ in range(2)] == [202, 202]
    _refused(client.post("/v1/tasks/a/webhook"), "REPLAY_LIMIT_REACHED", 8 * 24 * 3600)
    assert ctx.tasks.require("a").webhook_replays == 2
    assert client.post("/v1/tasks/b/webhook").status_code == 202  # this caller's third in the minute
    _refused(client.post("/v1/tasks/c/webhook"), "REPLAY_RATE_LIMITED", 60)
    record = ctx.tasks.require("c")
    assert (record.webhook_status, record.webhook_replays) == ("delivered", 0), "a refused replay changes nothing"
    responses = app.openapi()["paths"]["/v1/tasks/{task_id}/webhook"]["post"]["responses"]
    assert "REPLAY_RATE_LIMITED" in responses["429"]["description"]


def test_with_keys_on_each_key_has_its_own_count(tmp_path: Path) -> None:
    settings = Settings(imagegen_webhook_secret=SECRET)
    auth = {"enabled": True}
    with ingress_context(tmp_path, {"max_active": 8}, settings=settings, webhooks=REPLAY, auth=auth) as ctx:
        client = TestClient(app)
        headers = {}
        for name in ("alice", "bob"):
            key, token = ctx.tasks.keys.create(name)
            headers[name] = {"Authorization": f"Bearer {token}"}
            for i in range(4):
                _finished_with_webhook(ctx, f"{name}-{i}", key.key_id)
        for i in range(3):
            assert client.post(f"/v1/tasks/alice-{i}/webhook", headers=headers["alice"]).status_code == 202
        _refused(client.post("/v1/tasks/alice-3/webhook", headers=headers["alice"]), "REPLAY_RATE_LIMITED", 60)
        assert client.post("/v1/tasks/bob-0/webhook", headers=headers["bob"]).status_code == 202
