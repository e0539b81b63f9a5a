"""The Python client (imagegen_client) without Ray: its SSE decoder and retry policy alone, then the
client against the real ingress app (a real SQLite task store and local storage, see
`make_context`) through httpx transports, some wrapped to lose answers or cut streams; the test
thread plays the runner. Waits between retries go to a recording `sleep`, so nothing here waits
on the clock."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagegen_client import (
    ApiError,
    ImagegenClient,
    ImagegenConnectionError,
    RetryPolicy,
    SSEDecoder,
    TaskEvent,
    TaskNotDone,
    TaskResult,
)
from imagegen_client.cli import ProgressDisplay
from imagegen_client.retry import parse_retry_after
from serve_app.api import events as events_module
from serve_app.api.deps import IngressContext
from serve_app.ingress import app
from serve_app.tasks import TaskStore
from serve_app.webhook_secret import WebhookSecret
from tests.support.ingress import ingress_context

SECRET = "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldC0xMjM0NTY3ODkw"


# -- the SSE decoder (WHATWG "event stream interpretation") -----------------------------------------


def _decode(*chunks: bytes | str) -> list[tuple[str, str, str | None]]:
    decoder = SSEDecoder()
    return [(e.event, e.data, e.id) for chunk in chunks for e in decoder.feed(chunk)]


def test_sse_fields_defaults_and_multiline_data() -> None:
    stream = 'id: 7\nevent: progress\ndata: {"a":\ndata: 1}\n\ndata: plain\n\n'
    assert _decode(stream) == [("progress", '{"a":\n1}', "7"), ("message", "plain", "7")], "the id is kept"


def test_sse_the_specs_own_examples() -> None:
    # html.spec.whatwg.org, 9.2.6: the first block fires an event with data "" and the second "\n";
    # the last is cut off by the end of the stream and is not fired.
    assert _decode("data\n\ndata\ndata\n\ndata:") == [("message", "", None), ("message", "\n", None)]
    # "data:test" and "data: test" are the same: one space after the colon is dropped, no more.
    assert _decode("data:test\n\ndata: test\n\ndata:  two\n\n") == [
        ("message", "test", None),
        ("message", "test", None),
        ("message", " two", None),
    ]


def test_sse_comments_unknown_fields_and_events_without_data() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(": keepalive\n\nfoo: bar\nevent: x\nid: 3\n\nretry: 1500\nretry: soon\ndata: y\n\n")
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [("message", "y", "3", 1500)]
    assert decoder.last_event_id == "3", "an event without data still sets the id"
    assert decoder.feed("id: a\x00b\ndata: z\n\n")[0].id == "3", "an id with a NUL is ignored"
    assert decoder.feed("id\ndata: z\n\n")[0].id == "", "an empty id resets it"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_line_ends_and_any_split_of_the_bytes(newline: str) -> None:
    text = f"\ufeffevent: progress{newline}data: café ☕{newline}id: 1{newline}{newline}data: 2{newline}{newline}"
    whole = _decode(text.encode())
    assert whole == [("progress", "café ☕", "1"), ("message", "2", "1")], "the byte-order mark is dropped"
    raw = text.encode()
    assert _decode(*[raw[i : i + 1] for i in range(len(raw))]) == whole, "byte by byte, UTF-8 split mid-character"
    for cut in range(len(raw)):
        assert _decode(raw[:cut], raw[cut:]) == whole, f"split at {cut}"


def test_sse_a_crlf_split_between_pieces_is_one_line_end() -> None:
    assert _decode("data: a\r", "\ndata: b\r", "\n\r", "\n") == [("message", "a\nb", None)]


# -- retry policy -----------------------------------------------------------------------------------


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    low = RetryPolicy(backoff_s=0.5, max_backoff_s=4, rand=lambda: 0.0)
    high = RetryPolicy(backoff_s=0.5, max_backoff_s=4, rand=lambda: 1.0)
    assert [low.backoff(n) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [high.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert high.delay(0, retry_after=7) == 7, "Retry-After wins over the backoff"
    assert high.delay(0, retry_after=10_000) is None, "a Retry-After past max_retry_after_s is not waited out"
    assert [high.retries_status(s) for s in (429, 502, 503, 504, 500, 400, 404, 409, 422)] == [True] * 4 + [False] * 5


def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after("3") == 3 and parse_retry_after(" 0 ") == 0
    assert parse_retry_after(date, now=now) == pytest.approx(30)
    for bad in (None, "", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(bad) is None


def _mock_client(answers: list[Any], sleeps: list[float], **kw: Any) -> tuple[ImagegenClient, list[httpx.Request]]:
    """A client whose transport answers from `answers` in order: a Response, or an exception to raise."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = ImagegenClient("http://srv", transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw)
    return client, seen


def _task(task_id: str = "t1", status: str = "queued") -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "created_at": 1.0, "updated_at": 1.0}


def test_connection_errors_and_5xx_are_retried_until_the_budget_is_spent() -> None:
    sleeps: list[float] = []
    answers: list[Any] = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
        httpx.Response(429, headers={"Retry-After": "2"}, json={"error_code": "RATE_LIMITED", "message": "m"}),
        httpx.Response(200, json=_task()),
    ]
    client, seen = _mock_client(answers, sleeps, max_retries=4)
    assert client.result("t1").status == "queued"
    assert len(seen) == 5 and len(sleeps) == 4 and sleeps[3] == 2, "429's Retry-After is honoured"

    client, seen = _mock_client([httpx.ConnectError("refused")] * 3, sleeps, max_retries=2)
    with pytest.raises(ImagegenConnectionError):
        client.result("t1")
    assert len(seen) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 422, 500])
def test_other_errors_are_not_retried_and_carry_the_servers_code(status: int) -> None:
    body = {"error_code": "SOME_CODE", "message": "why"} if status != 400 else {"detail": "Prompt must not be empty."}
    sleeps: list[float] = []
    client, seen = _mock_client([httpx.Response(status, json=body)], sleeps)
    with pytest.raises(ApiError) as caught:
        client.result("t1")
    assert len(seen) == 1 and sleeps == []
    error = caught.value
    assert error.status == status
    if status == 400:
        assert (error.error_code, error.message) == ("BAD_REQUEST", "Prompt must not be empty.")
    else:
        assert (error.error_code, error.message) == ("SOME_CODE", "why")


def test_a_retry_after_too_long_to_wait_is_raised_with_it() -> None:
    sleeps: list[float] = []
    answer = httpx.Response(503, headers={"Retry-After": "3600"}, json={"error_code": "QUEUE_FULL", "message": "m"})
    client, _ = _mock_client([answer], sleeps)
    with pytest.raises(ApiError) as caught:
        client.result("t1")
    assert caught.value.retry_after == 3600 and sleeps == []


def test_the_api_key_goes_to_the_server_only(tmp_path: Path) -> None:
    sleeps: list[float] = []
    png = _png()
    done = {
        **_task(status="done"),
        "images": [{"url": "http://srv/files/u/a.png"}, {"url": "https://cdn.example/b.png"}],
    }
    answers = [httpx.Response(200, content=png, headers={"content-type": "image/png"}) for _ in range(2)]
    client, seen = _mock_client(answers, sleeps, api_key="igs_abc_secret")
    assert "igs_abc_secret" not in repr(client)
    client.download(TaskResult.model_validate(done), tmp_path)
    assert seen[0].headers.get("authorization") == "Bearer igs_abc_secret"
    assert "authorization" not in seen[1].headers, "never sent to another host"


# -- against the real ingress app -------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IngressContext]:
    monkeypatch.setattr(events_module, "POLL_S", 0.02)
    with ingress_context(tmp_path, {"max_active": 50, "retry_after_s": 9}) as context:
        yield context


class AppTransport(httpx.BaseTransport):
    """The ingress app behind an httpx transport, through Starlette's TestClient (which streams).

    The TestClient is built on httpx2, a package apart from the httpx the client uses, so requests
    and responses are carried across: method, URL, headers and body in, status, headers and the
    body's chunks (as the app sends them) out."""

    def __init__(self) -> None:
        self.client = TestClient(app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        inner = self.client.build_request(
            request.method, str(request.url), headers=list(request.headers.multi_items()), content=request.read()
        )
        response = self.client.send(inner, stream=True)
        return httpx.Response(
            response.status_code,
            headers=list(response.headers.multi_items()),
            stream=_Stream(response.iter_raw(), response.close),
        )


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.chunks, self._close = chunks, close

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self._close()


def app_transport() -> httpx.BaseTransport:
    return AppTransport()


class Recorder(httpx.BaseTransport):
    """Forwards to `inner`, recording requests; `lose_posts` answers of POST /v1/generate are
    lost after the server has handled them (httpx.ReadError instead, as when a connection drops)."""

    def __init__(self, inner: httpx.BaseTransport, lose_posts: int = 0, strip_idempotency: bool = False) -> None:
        self.inner = inner
        self.lose_posts = lose_posts
        self.strip_idempotency = strip_idempotency
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.strip_idempotency and "idempotency-key" in request.headers:
            del request.headers["idempotency-key"]
        self.requests.append(request)
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/generate" and self.lose_posts > 0:
            response.read()
            self.lose_posts -= 1
            raise httpx.ReadError("connection reset after the request was handled", request=request)
        return response


def _png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _count(tasks: TaskStore) -> int:
    return int(tasks.db.read("SELECT COUNT(*) AS n FROM tasks")[0]["n"])


@pytest.mark.parametrize("with_photo", [False, True])
def test_a_submit_whose_answer_is_lost_is_retried_into_the_same_task(ctx: IngressContext, with_photo: bool) -> None:
    transport = Recorder(app_transport(), lose_posts=2)
    sleeps: list[float] = []
    client = ImagegenClient("http://t", transport=transport, sleep=sleeps.append)
    image = _png() if with_photo else None
    accepted = client.submit("a desk", image=image, steps=4, seed=3, lora="cozy-wood", lora_scale=0.5)
    posts = [r for r in transport.requests if r.method == "POST"]
    assert len(posts) == 3 and len(sleeps) == 2, "two answers lost, the third attempt got one"
    keys = {r.headers["idempotency-key"] for r in posts}
    assert len(keys) == 1, "one Idempotency-Key for every attempt of one submit"
    assert _count(ctx.tasks) == 1, "the server made one task"
    record = ctx.tasks.require(accepted.task_id)
    lora = record.request["lora"]
    assert record.request["num_inference_steps"] == 4 and (lora["name"], lora["scale"]) == ("cozy-wood", 0.5)
    assert (record.input_key is not None) == with_photo
    assert ctx.runner.run.calls == [(accepted.task_id,)]  # type: ignore[attr-defined]

    other = client.submit("a desk", image=image, steps=4, seed=3, lora="cozy-wood", lora_scale=0.5)
    assert other.task_id != accepted.task_id, "a new submit is a new task (a new key)"


def test_a_photo_needs_no_prompt_and_a_text_request_does(ctx: IngressContext) -> None:
    client = ImagegenClient("http://t", transport=Recorder(app_transport()))
    accepted = client.submit(image=_png(), steps=4)
    record = ctx.tasks.require(accepted.task_id)
    assert record.input_key is not None and record.request["num_inference_steps"] == 4
    with pytest.raises(ApiError) as caught:
        client.submit(steps=4)
    assert caught.value.status == 400 and caught.value.message == "Prompt must not be empty."
    assert _count(ctx.tasks) == 1


def test_without_the_idempotency_key_a_lost_answer_would_make_two_tasks(ctx: IngressContext) -> None:
    # The control for the test above: the same lost answer, the key stripped on the way out.
    transport = Recorder(app_transport(), lose_posts=1, strip_idempotency=True)
    client = ImagegenClient("http://t", transport=transport, sleep=lambda s: None)
    client.submit("a desk", seed=3)
    assert _count(ctx.tasks) == 2


def test_a_full_queue_is_waited_out_with_its_retry_after(tmp_path: Path) -> None:
    with ingress_context(tmp_path, {"max_active": 1, "retry_after_s": 9}) as context:
        transport = Recorder(app_transport())
        first = ImagegenClient("http://t", transport=transport).submit("first")
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:  # while the client waits, the queue frees up
            sleeps.append(seconds)
            context.tasks.request_cancel(first.task_id)

        second = ImagegenClient("http://t", transport=transport, sleep=sleep).submit("second")
        assert sleeps == [9.0], "503 QUEUE_FULL's Retry-After: 9"
        statuses = [r.headers["idempotency-key"] for r in transport.requests[1:]]
        assert len(statuses) == 2 and len(set(statuses)) == 1
        assert context.tasks.require(second.task_id).status == "queued" and _count(context.tasks) == 2


def test_invalid_input_is_not_retried(ctx: IngressContext) -> None:
    transport = Recorder(app_transport())
    sleeps: list[float] = []
    client = ImagegenClient("http://t", transport=transport, sleep=sleeps.append)
    with pytest.raises(ApiError) as caught:
        client.submit("a desk", guidance_scale=-1)
    assert caught.value.status == 422 and caught.value.error_code == "INVALID_INPUT"
    assert "Guidance scale" in caught.value.message
    assert len(transport.requests) == 1 and sleeps == [] and _count(ctx.tasks) == 0
    with pytest.raises(ValueError):
        client.submit("a desk", size="big")


def _run(tasks: TaskStore, task_id: str) -> str:
    record = tasks.queue.claim(task_id, "runner", 30)
    assert record is not None and record.lease_owner
    return record.lease_owner


def test_events_follow_a_task_to_its_result(ctx: IngressContext) -> None:
    client = ImagegenClient("http://t", transport=app_transport(), sleep=lambda s: None)
    task_id = client.submit("a desk").task_id
    stream = client.events(task_id)
    first = next(stream)
    assert first.event == "progress" and first.progress is not None
    assert first.progress.status == "queued" and first.progress.queue_position == 0
    lease = _run(ctx.tasks, task_id)
    ctx.tasks.set_progress(task_id, "generating", 3, 10)
    running = next(stream)
    assert running.progress is not None and (running.progress.stage, running.progress.step) == ("generating", 3)
    assert int(running.id or 0) > int(first.id or 0)
    ctx.tasks.queue.complete(task_id, lease, {"caption": "a desk", "processed_image_url": "http://t/files/x.png"})
    final = next(stream)
    assert final.final and final.result is not None and final.result.status == "done"
    assert final.result.caption == "a desk" and final.result.image_urls == ["http://t/files/x.png"]
    assert list(stream) == [], "the generator ends at the result"


class CutStreams(httpx.BaseTransport):
    """Forwards to `inner`; the first event stream is cut (httpx.ReadError) after its first event."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.streams: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.streams.append(request)
        if len(self.streams) > 1:
            return response

        def cut() -> Iterator[bytes]:
            for chunk in response.stream:  # type: ignore[union-attr]
                yield chunk
                if b"event:" in chunk:
                    break
            raise httpx.ReadError("connection reset mid-stream", request=request)

        return httpx.Response(response.status_code, headers=response.headers, stream=_Stream(cut(), response.close))


def test_a_dropped_stream_resumes_with_last_event_id(ctx: IngressContext) -> None:
    transport = CutStreams(app_transport())
    sleeps: list[float] = []
    client = ImagegenClient("http://t", transport=transport, sleep=sleeps.append)
    task_id = client.submit("a desk").task_id
    stream = client.events(task_id)
    first = next(stream)
    assert first.progress is not None and first.progress.status == "queued"
    lease = _run(ctx.tasks, task_id)  # changes while the client is away
    ctx.tasks.set_progress(task_id, "generating", 1, 2)
    second = next(stream)
    assert [r.headers.get("last-event-id") for r in transport.streams] == [None, first.id]
    assert sleeps == [1.0], "reopened after the server's `retry: 1000`"
    assert second.progress is not None and second.progress.stage == "generating", "nothing repeated"
    ctx.tasks.queue.complete(task_id, lease, {})
    assert [e.event for e in stream] == ["result"]


def test_a_stream_that_keeps_failing_gives_up(ctx: IngressContext) -> None:
    answers: list[Any] = [httpx.ConnectError("refused")] * 3
    sleeps: list[float] = []
    client, seen = _mock_client(answers, sleeps, max_retries=2)
    with pytest.raises(ImagegenConnectionError):
        list(client.events("t1"))
    assert len(seen) == 3 and len(sleeps) == 2


def test_wait_polls_where_the_server_has_no_event_stream(ctx: IngressContext) -> None:
    inner = app_transport()

    class NoEvents(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/events"):  # an older server: the route is unknown
                return httpx.Response(404, json={"error_code": "NOT_FOUND", "message": "Not Found"})
            return inner.handle_request(request)

    steps: list[Callable[[], Any]] = []
    client = ImagegenClient("http://t", transport=NoEvents(), sleep=lambda s: steps.pop(0)())
    task_id = client.submit("a desk").task_id
    lease: list[str] = []
    steps += [
        lambda: lease.append(_run(ctx.tasks, task_id)),
        lambda: ctx.tasks.set_progress(task_id, "generating", 1, 2),
        lambda: None,  # nothing changed: no event
        lambda: ctx.tasks.queue.complete(task_id, lease[0], {"caption": "polled"}),
    ]
    seen: list[TaskEvent] = []
    result = client.wait(task_id, on_event=seen.append)
    assert result.status == "done" and result.caption == "polled" and steps == []
    states = [(e.event, e.progress.status, e.progress.stage) if e.progress else (e.event,) for e in seen]
    assert states == [
        ("progress", "queued", "queued"),
        ("progress", "processing", "queued"),
        ("progress", "processing", "generating"),
        ("result",),
    ], "one event per change seen, none for a poll that saw none"


def test_wait_returns_a_failed_task_and_cancel_is_idempotent(ctx: IngressContext) -> None:
    client = ImagegenClient("http://t", transport=app_transport(), sleep=lambda s: None)
    task_id = client.submit("a desk").task_id
    cancelled = client.cancel(task_id)
    assert cancelled.status == "failed" and cancelled.error_code == "CANCELLED"
    assert client.cancel(task_id).error_code == "CANCELLED", "cancelling a cancelled task is not an error"
    result = client.wait(task_id)
    assert result.status == "failed" and result.error_code == "CANCELLED"
    with pytest.raises(TaskNotDone):
        client.download(result, "/nonexistent")

    done = client.submit("another desk").task_id
    ctx.tasks.queue.complete(done, _run(ctx.tasks, done), {})
    with pytest.raises(ApiError) as caught:
        client.cancel(done)
    assert caught.value.status == 409 and caught.value.error_code == "TASK_FINISHED"
    with pytest.raises(ApiError) as missing:
        client.wait("no-such-task")
    assert missing.value.status == 404 and missing.value.error_code == "TASK_NOT_FOUND"


def _finish_with_images(ctx: IngressContext, task_id: str, count: int, user: str = "anonymous") -> list[str]:
    urls = []
    for i in range(count):
        key = f"{user}/20260101/{task_id}-{i}.png"
        urls.append(asyncio.run(ctx.images.put(key, _png(16 + i, 16), content_type="image/png")))
    result: dict[str, Any] = {"processed_image_url": urls[0]}
    if count > 1:
        images = [{"url": url, "key": url.rsplit("/files/", 1)[1], "seed": 5 + i} for i, url in enumerate(urls)]
        result["images"] = images
    ctx.tasks.queue.complete(task_id, _run(ctx.tasks, task_id), result)
    return urls


def test_download_saves_every_image(ctx: IngressContext, tmp_path: Path) -> None:
    client = ImagegenClient("http://t", transport=app_transport())
    one, many = client.submit("one").task_id, client.submit("many", n=3).task_id
    _finish_with_images(ctx, one, 1)
    _finish_with_images(ctx, many, 3)
    [path] = client.download(one, tmp_path / "out")
    assert path.name == f"{one}.png" and Image.open(path).size == (16, 16)
    paths = client.download(client.result(many), tmp_path / "out")
    assert [p.name for p in paths] == [f"{many}-{i}.png" for i in range(3)]
    assert [Image.open(p).size for p in paths] == [(16, 16), (17, 16), (18, 16)], "each image, in order"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([path.name, *(p.name for p in paths)])


def test_download_sends_the_api_key_for_files(tmp_path: Path) -> None:
    with ingress_context(tmp_path, {"max_active": 50}, auth={"enabled": True}) as context:
        key, token = context.tasks.keys.create("ci", user_id="alice")
        client = ImagegenClient("http://t", api_key=token, transport=app_transport())
        task_id = client.submit("a desk").task_id
        _finish_with_images(context, task_id, 1, user=key.user_id)
        [path] = client.download(task_id, tmp_path / "out")
        assert Image.open(path).size == (16, 16)
        anonymous = ImagegenClient("http://t", transport=app_transport())
        with pytest.raises(ApiError) as caught:
            anonymous.result(task_id)
        assert caught.value.status == 401


# -- webhook replay: the route ----------------------------------------------------------------------


def test_replay_webhook_route(ctx: IngressContext) -> None:
    client = ImagegenClient("http://t", transport=app_transport())
    ctx.tasks.create("hooked", kind="desk", request={}, webhook_url="https://example.com/hook")
    ctx.tasks.create("plain", kind="desk", request={})
    with pytest.raises(ApiError) as disabled:
        client.replay_webhook("hooked")
    assert (disabled.value.status, disabled.value.error_code) == (422, "WEBHOOKS_DISABLED")

    ctx.webhooks = WebhookSecret.configured(SECRET)
    for task_id, status, code in [
        ("hooked", 409, "TASK_NOT_FINISHED"),
        ("plain", 409, "NO_WEBHOOK"),
        ("nope", 404, "TASK_NOT_FOUND"),
    ]:
        with pytest.raises(ApiError) as caught:
            client.replay_webhook(task_id)
        assert (caught.value.status, caught.value.error_code) == (status, code)

    ctx.tasks.queue.complete("hooked", _run(ctx.tasks, "hooked"), {})
    ctx.tasks.outbox.finish("hooked", delivered=True, attempts=1)
    assert ctx.tasks.outbox.due() == []
    replay = client.replay_webhook("hooked")
    assert (replay.task_id, replay.webhook_id, replay.webhook_status) == ("hooked", "msg_hooked", "pending")
    assert ctx.tasks.outbox.due() == ["hooked"], "queued for the runners' maintenance pass"

    responses = app.openapi()["paths"]["/v1/tasks/{task_id}/webhook"]["post"]["responses"]
    assert {"202", "401", "404", "409", "422"} <= set(responses)
    assert "POST /v1/tasks/{task_id}/webhook" in " ".join(TestClient(app).get("/info").json()["endpoints"])


# -- the CLI's progress display ---------------------------------------------------------------------


def _event(kind: str, **data: Any) -> TaskEvent:
    from imagegen_client.sse import ServerSentEvent

    return TaskEvent.from_sse(ServerSentEvent(event=kind, data=json.dumps({"task_id": "t1", **data})))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_without_a_terminal_is_one_line_per_stage() -> None:
    out = io.StringIO()
    display = ProgressDisplay("t1", stream=out)
    display(_event("progress", status="queued", stage="queued", queue_position=2, eta_s=4))
    display(_event("progress", status="queued", stage="queued", queue_position=1, eta_s=2))
    display(_event("progress", status="processing", stage="generating", step=1, total_steps=4))
    display(_event("progress", status="processing", stage="generating", step=2, total_steps=4))
    display(_event("result", status="done", created_at=1, updated_at=2))
    assert out.getvalue().splitlines() == [
        "task t1: queued (2 ahead, ~4s left)",
        "task t1: processing: generating (step 1/4)",
        "task t1: done",
    ]


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place() -> None:
    out = _Tty()
    display = ProgressDisplay("t1", stream=out, width=10)
    display(_event("progress", status="processing", stage="generating", step=2, total_steps=4))
    display(_event("result", status="failed", error_code="CANCELLED", created_at=1, updated_at=2))
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[#####-----]  50% processing: generating (step 2/4)" in text
    assert "failed CANCELLED" in text
