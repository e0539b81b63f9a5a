"""Caps on long requests and the body deadline (serve_app.api.slots): the ingress under uvicorn on
127.0.0.1 with a real SQLite task store. Event streams are the long requests here: each stays open
until the test closes it, so the counts are exact whatever the timing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from serve_app.api import events as events_module
from serve_app.api.config import LongRequestsConfig
from serve_app.api.slots import Slots, caller_of
from serve_app.errors import ServiceUnavailable, TooManyRequests
from serve_app.ingress import app
from testbed.harness import free_port, wait_http_ok
from tests.support.ingress import ingress_context, multipart, png


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ingress app under uvicorn on 127.0.0.1 (a real ASGI server: a stream's request lasts as
    long as the stream), with small caps; callers are told apart by X-Forwarded-For, which the
    server believes from 127.0.0.1."""
    monkeypatch.setattr(events_module, "POLL_S", 0.02)
    limits = {"per_caller": 2, "total": 3, "retry_after_s": 7, "client_ip_header": "X-Forwarded-For"}
    with ingress_context(tmp_path, {"max_active": 50}, long_requests=limits):
        config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{config.port}"
        wait_http_ok(f"{base}/info", timeout_s=30)
        try:
            yield base
        finally:
            uv.should_exit = True
            thread.join(timeout=10)


def _as(who: str) -> dict[str, str]:
    return {"X-Forwarded-For": who}


def _task(client: httpx.Client) -> str:
    return str(client.post("/v1/generate", json={"prompt": "a desk", "seed": 1}).json()["task_id"])


_READERS: list[Iterator[str]] = []  # open streams' line iterators: one dropped would close its stream


def _open(stack: ExitStack, client: httpx.Client, task_id: str, who: str) -> httpx.Response:
    response = stack.enter_context(client.stream("GET", f"/v1/tasks/{task_id}/events", headers=_as(who)))
    if response.status_code == 200:
        lines = response.iter_lines()
        _READERS.append(lines)
        assert next(lines) == "retry: 1000"  # the stream is open
    return response


def _eventually_open(client: httpx.Client, task_id: str, who: str, within_s: float = 30.0) -> bool:
    """Whether a stream opens before `within_s` (a closed stream's server side ends at its next
    poll, when it sees the client gone)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with ExitStack() as stack:
            if _open(stack, client, task_id, who).status_code == 200:
                _READERS.clear()
                return True
        time.sleep(0.05)
    return False


def test_one_caller_gets_429_past_its_cap_and_short_requests_still_answer(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client, ExitStack() as stack:
        task_id = _task(client)
        opened = [_open(stack, client, task_id, "10.0.0.1") for _ in range(2)]
        assert [r.status_code for r in opened] == [200, 200]
        refused = client.get(f"/v1/tasks/{task_id}/events", headers=_as("10.0.0.1"))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "7"
        assert refused.json()["error_code"] == "TOO_MANY_LONG_REQUESTS"
        for path in ("/healthcheck", "/info", f"/v1/result/{task_id}"):
            assert client.get(path, headers=_as("10.0.0.1")).status_code == 200, path  # short: not counted
        assert client.post("/v1/generate", json={"prompt": "a desk"}, headers=_as("10.0.0.1")).status_code == 202
        stack.close()
        _READERS.clear()
        assert _eventually_open(client, task_id, "10.0.0.1"), "the slots came back when the streams closed"


def test_the_replica_cap_leaves_the_rest_to_short_requests(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client, ExitStack() as stack:
        task_id = _task(client)
        callers = ("10.0.0.1", "10.0.0.1", "10.0.0.2")
        assert [_open(stack, client, task_id, who).status_code for who in callers] == [200, 200, 200]
        busy = client.get(f"/v1/tasks/{task_id}/events", headers=_as("10.0.0.3"))
        assert busy.status_code == 503 and busy.json()["error_code"] == "LONG_REQUESTS_BUSY"
        assert busy.headers["Retry-After"] == "7"
        assert client.get("/info").status_code == 200
    _READERS.clear()


def test_a_forwarded_address_counts_only_from_a_trusted_proxy() -> None:
    config = LongRequestsConfig(client_ip_header="X-Forwarded-For")

    def scope(peer: str, **headers: str) -> dict[str, Any]:
        return {"client": (peer, 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    forwarded = {"X-Forwarded-For": "203.0.113.7, 10.1.1.1"}
    assert caller_of(scope("127.0.0.1", **forwarded), config, False) == "ip:203.0.113.7"
    assert caller_of(scope("10.0.0.1", **forwarded), config, False) == "ip:10.0.0.1", "an untrusted peer's claim"
    assert caller_of(scope("127.0.0.1", **forwarded), LongRequestsConfig(), False) == "ip:127.0.0.1"


def test_an_event_stream_ends_at_its_maximum_life(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "POLL_S", 0.02)
    with ingress_context(tmp_path, {"max_active": 5}, long_requests={"stream_max_s": 0.2}):
        client = TestClient(app)
        task_id = _task(client)
        with client.stream("GET", f"/v1/tasks/{task_id}/events") as response:
            lines = list(response.iter_lines())  # returns only because the server ended the stream
        assert lines[0] == "retry: 1000" and any(line.startswith("event: progress") for line in lines)


def test_with_keys_on_a_caller_is_its_key() -> None:
    config = LongRequestsConfig()

    def scope(**headers: str) -> dict[str, Any]:
        return {"client": ("10.0.0.1", 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    keyed = scope(Authorization="Bearer igs_abc123_secretpart")
    assert caller_of(keyed, config, keys_on=True) == "key:abc123"
    assert caller_of(keyed, config, keys_on=False) == "ip:10.0.0.1", "keys off: a made-up key is no identity"
    assert caller_of(scope(**{"X-API-Key": "igs_k9_s"}), config, keys_on=True) == "key:k9"
    assert caller_of(scope(**{"X-API-Key": "nonsense"}), config, keys_on=True) == "ip:10.0.0.1"


def test_slots_count_per_caller_and_in_all() -> None:
    slots = Slots()
    slots.take("a", per_caller=2, total=3, retry_after_s=1)
    slots.take("a", per_caller=2, total=3, retry_after_s=1)
    with pytest.raises(TooManyRequests):
        slots.take("a", per_caller=2, total=3, retry_after_s=1)
    slots.take("b", per_caller=2, total=3, retry_after_s=1)
    with pytest.raises(ServiceUnavailable):
        slots.take("c", per_caller=2, total=3, retry_after_s=1)
    for caller in ("a", "a", "b"):
        slots.give(caller)
    assert slots.total == 0 and slots.by_caller == {}


def test_a_trickled_upload_is_cut_at_the_body_deadline(tmp_path: Path) -> None:
    """The body's first part comes, the rest never does: 408 in the route's error shape."""
    context = ingress_context(tmp_path, {"max_active": 5}, long_requests={"body_timeout_s": 0.2})
    context.__enter__()
    body, headers = multipart([("image", "photo.png", png())])
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent and not getattr(receive, "started", False):
            receive.started = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": body[:100], "more_body": True}
        await never.wait()  # the client trickles nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/generate",
        "raw_path": b"/v1/generate",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"content-type", headers["content-type"].encode()), (b"host", b"testserver")],
        "client": ("10.0.0.5", 1),
        "server": ("testserver", 80),
        "http_version": "1.1",
        "app": app,
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert b"REQUEST_TIMEOUT" in b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    context.__exit__(None, None, None)


def test_no_route_or_dependency_of_the_app_is_a_closure() -> None:
    """Serve pickles the FastAPI app and rebuilds each route's dependencies in the replica; a closure
    is pickled by value with only the globals its code names, so its string annotations (`request:
    Request` under `from __future__ import annotations`) no longer resolve there and FastAPI reads
    the parameter as a required body field (every POST /v1/generate answered 422)."""
    from fastapi.routing import APIRoute

    from serve_app.ingress import app

    def calls(dependant: Any) -> list[Any]:
        found = [dependant.call]
        for sub in dependant.dependencies:
            found += calls(sub)
        return found

    closures = {
        (route.path, call.__qualname__)
        for route in app.routes
        if isinstance(route, APIRoute)
        for call in calls(route.dependant)
        if "<locals>" in getattr(call, "__qualname__", "")
    }
    assert closures == set()
