"""The OpenAI-compatible routes without Ray: OpenAI's request and error shapes, the bounded wait,
`n` and output formats, and the plain image flow.

The ingress app runs under TestClient with a real SQLite task store and local storage. Its runner
runs the real ImageFlow (prompt, n specs, encoding, storing) over a Generator stand-in that
paints one solid PNG per spec; the Serve app itself is exercised by the `openai` package in
tests/integration/test_openai_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.deps import IngressContext
from serve_app.flows.kit import FlowDeps
from serve_app.ingress import app
from serve_app.products.images.flow import ImageFlow
from serve_app.tasks.notify import TaskChanges
from testbed.harness import PaintingStages, WorkerRunner
from tests.support.ingress import ingress_context, multipart, png


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, {"max_active": 8}, openai={"max_wait_s": 20, "poll_s": 0.02}) as context:
        yield context


@pytest.fixture
def runner(ctx: IngressContext, stages: PaintingStages) -> WorkerRunner:
    ctx.runner = WorkerRunner(ctx, {"image": ImageFlow(FlowDeps(stages, ctx.images))})  # type: ignore[arg-type,assignment]
    return ctx.runner  # type: ignore[return-value]


@pytest.fixture
def client(ctx: IngressContext, runner: WorkerRunner) -> TestClient:
    return TestClient(app)


def _task_count(ctx: IngressContext) -> int:
    return len(ctx.tasks.db.read("SELECT task_id FROM tasks"))


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "prompt", "INVALID_INPUT"),
        ({"prompt": "a desk", "output_format": "gif"}, "output_format", "INVALID_INPUT"),
        ({"prompt": "a desk", "background": "transparent"}, "background", "INVALID_INPUT"),
        ({"prompt": "a desk", "stream": True}, "stream", "INVALID_INPUT"),
        ({"prompt": "a desk", "model": "no-such-model"}, "model", "MODEL_NOT_FOUND"),
        ({"prompt": "a desk", "n": 11}, "n", "INVALID_INPUT"),
        ({"prompt": "a desk", "size": "1024"}, "size", "INVALID_INPUT"),
        ({"prompt": "a desk", "colour": "red"}, "colour", "INVALID_INPUT"),
    ],
)
def test_bad_requests_are_400_in_openais_shape_and_record_nothing(
    client: TestClient, ctx: IngressContext, body: dict[str, Any], param: str, code: str
) -> None:
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["message"]
    assert error["param"] == param
    assert _task_count(ctx) == 0


def test_the_presets_own_ranges_are_400_too(client: TestClient, ctx: IngressContext) -> None:
    for body in (
        {"prompt": "a desk", "size": "1000x1000"},  # past the tiny preset's max side
        {"prompt": "a desk", "size": "60x60"},  # not a multiple of 8
        {"prompt": "a desk", "n": 9},  # past limits.max_images (8)
        {"prompt": " "},
    ):
        response = client.post("/v1/images/generations", json=body)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert _task_count(ctx) == 0


def test_generations_answer_with_n_urls_of_stored_images(
    client: TestClient, ctx: IngressContext, stages: PaintingStages
) -> None:
    response = client.post(
        "/v1/images/generations",
        json={"prompt": "a walnut desk", "n": 3, "size": "96x64", "seed": 41, "output_format": "webp"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output_format"] == "webp" and body["size"] == "96x64" and len(body["data"]) == 3
    assert [spec.seed for spec in stages.specs] == [41, 42, 43]
    task_id = response.headers["X-Task-Id"]
    record = ctx.tasks.require(task_id)
    assert record.kind == "image" and record.status == "done" and record.cost == 96 * 64 * 20 * 3
    for item, image in zip(body["data"], record.result["images"], strict=True):  # type: ignore[index]
        assert item["url"] == image["url"] and item["url"].endswith(".webp")
        assert item["revised_prompt"].startswith("a walnut desk")
        stored = Image.open(io.BytesIO(asyncio.run(ctx.images.get(image["key"]))))
        assert stored.format == "WEBP" and stored.size == (96, 64)


def test_b64_json_carries_the_image_bytes(client: TestClient, ctx: IngressContext) -> None:
    response = client.post(
        "/v1/images/generations", json={"prompt": "a desk", "response_format": "b64_json", "output_format": "jpeg"}
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert "url" not in item
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert image.format == "JPEG" and image.size == (64, 64)  # the tiny preset's default size


def test_model_names_a_lora_or_an_openai_alias(client: TestClient, ctx: IngressContext) -> None:
    lora = ctx.preset.loras[0]
    response = client.post("/v1/images/generations", json={"prompt": "a desk", "model": lora.name})
    assert response.status_code == 200, response.text
    record = ctx.tasks.require(response.headers["X-Task-Id"])
    assert record.request["lora"]["name"] == lora.name
    assert all(word in record.result["prompt"] for word in lora.trigger_words)  # type: ignore[index]
    response = client.post("/v1/images/generations", json={"prompt": "a desk", "model": "dall-e-3"})
    assert response.status_code == 200 and ctx.tasks.require(response.headers["X-Task-Id"]).request["lora"] is None


def test_a_failed_task_is_a_500_in_openais_shape(
    client: TestClient, ctx: IngressContext, stages: PaintingStages
) -> None:
    stages.fail_with = RuntimeError("CUDA out of memory")
    response = client.post("/v1/images/generations", json={"prompt": "a desk"}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "GENERATION_FAILED"
    assert response.headers["x-should-retry"] == "false"  # the same key would answer with this failure
    assert ctx.tasks.require(response.headers["X-Task-Id"]).status == "failed"


def test_past_the_wait_a_504_names_the_task_and_the_same_key_waits_again(
    client: TestClient, ctx: IngressContext, runner: WorkerRunner
) -> None:
    ctx.args.openai.max_wait_s = 0.1
    runner.hold = True  # the task stays queued
    first = client.post("/v1/images/generations", json={"prompt": "a desk"}, headers={"Idempotency-Key": "slow"})
    assert first.status_code == 504, first.text
    task_id = first.headers["X-Task-Id"]
    assert first.json()["error"]["code"] == "TIMEOUT" and task_id in first.json()["error"]["message"]
    assert "x-should-retry" not in first.headers  # with a key, a retry waits on the same task
    no_key = client.post("/v1/images/generations", json={"prompt": "a desk"})
    assert no_key.status_code == 504 and no_key.headers["x-should-retry"] == "false"

    ctx.args.openai.max_wait_s = 20
    runner.hold = False
    asyncio.run(runner._run(task_id))  # the runner gets to it
    again = client.post("/v1/images/generations", json={"prompt": "a desk"}, headers={"Idempotency-Key": "slow"})
    assert again.status_code == 200 and again.headers["X-Task-Id"] == task_id
    assert _task_count(ctx) == 2


def test_edits_take_one_image_and_keep_its_aspect(client: TestClient, ctx: IngressContext) -> None:
    response = client.post(
        "/v1/images/edits",
        files={"image": ("desk.png", png(120, 90), "image/png")},
        data={"prompt": "make the lighting warmer", "n": "2", "strength": "0.5"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2 and body["size"] == "72x56"  # 4:3 at about the preset's 64x64 area
    record = ctx.tasks.require(response.headers["X-Task-Id"])
    assert record.input_key and record.request["strength"] == 0.5
    assert record.result["images"][0]["url"].endswith(".png")  # type: ignore[index]


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ([], {"prompt": "warmer"}, "image"),
        ([("image", ("a.png", png(), "image/png"))], {}, "prompt"),
        ([("image", ("a.png", png(), "image/png")), ("mask", ("m.png", png(), "image/png"))], {"prompt": "x"}, "mask"),
        (
            [("image[]", ("a.png", png(), "image/png")), ("image[]", ("b.png", png(), "image/png"))],
            {"prompt": "x"},
            "image",
        ),
        ([("image", ("a.png", png(), "image/png"))], {"prompt": "x", "strength": "2"}, None),
    ],
)
def test_bad_edits_are_400_and_record_nothing(
    client: TestClient, ctx: IngressContext, files: list[Any], data: dict[str, str], param: str | None
) -> None:
    if files:
        response = client.post("/v1/images/edits", files=files, data=data)
    else:  # a multipart body with text fields only
        body, headers = multipart([(name, None, value.encode()) for name, value in data.items()])
        response = client.post("/v1/images/edits", content=body, headers=headers)
    assert response.status_code == 400, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert _task_count(ctx) == 0


def test_an_edit_of_something_not_an_image_is_400(client: TestClient, ctx: IngressContext) -> None:
    response = client.post(
        "/v1/images/edits", files={"image": ("a.png", b"not an image", "image/png")}, data={"prompt": "warmer"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_IMAGE"
    assert _task_count(ctx) == 0


def test_generate_takes_n_and_an_output_format_too(client: TestClient, ctx: IngressContext) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "n": 2, "output_format": "jpeg"})
    assert response.status_code == 202, response.text
    record = ctx.tasks.require(response.json()["task_id"])
    assert record.kind == "desk" and record.request["n"] == 2 and record.request["output_format"] == "jpeg"
    assert record.cost == 64 * 64 * 20 * 2
    for body in (
        {"prompt": "a desk", "n": 0},
        {"prompt": "a desk", "n": 9},
        {"prompt": "a desk", "output_format": "gif"},
    ):
        assert client.post("/v1/generate", json=body).status_code == 422


def test_the_openapi_document_has_both_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/images/generations", "/v1/images/edits"} <= set(schema["paths"])
    edit = schema["components"]["schemas"]["ImageEditRequest"]
    assert {"image", "prompt"} <= set(edit["required"]) and edit["properties"]["image"]["format"] == "binary"
    generate = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert generate["n"]["anyOf"][0]["maximum"] == 8


def test_prefer_respond_async_answers_202_with_the_task(
    client: TestClient, ctx: IngressContext, runner: WorkerRunner
) -> None:
    runner.hold = True
    response = client.post(
        "/v1/images/generations", json={"prompt": "a desk"}, headers={"Prefer": "respond-async, wait=100"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    task_id = response.json()["task_id"]
    assert response.headers["Location"] == f"/v1/result/{task_id}" and ctx.tasks.require(task_id).status == "queued"


def test_prefer_wait_shortens_the_wait(client: TestClient, ctx: IngressContext, runner: WorkerRunner) -> None:
    runner.hold = True
    response = client.post("/v1/images/generations", json={"prompt": "a desk"}, headers={"Prefer": "wait=0"})
    assert response.status_code == 504 and response.json()["error"]["code"] == "TIMEOUT"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (False, None)),
        ("respond-async", (True, None)),
        ("wait=5, handling=lenient", (False, 5.0)),
        ('RESPOND-ASYNC ,wait="2.5"', (True, 2.5)),
        ("wait=-3", (False, 0.0)),
        ("wait=soon", (False, None)),
    ],
)
def test_prefer_header_parsing(header: str | None, expected: tuple[bool, float | None]) -> None:
    from serve_app.api.waiting import preferences

    assert preferences(header) == expected


def test_the_documented_sizes_and_models_are_the_servers(client: TestClient, ctx: IngressContext) -> None:
    import re

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    generation = schemas["ImageGenerationRequest"]["properties"]
    size = next(b for b in generation["size"]["anyOf"] if b.get("type") == "string")["pattern"]
    assert re.match(size, "512x32") and re.match(size, "auto")
    assert not re.match(size, "520x32") and not re.match(size, "60x64") and not re.match(size, "24x32")
    models = next(b for b in generation["model"]["anyOf"] if b.get("type") == "string")["enum"]
    assert models[0] == ctx.preset.name and "dall-e-3" in models
    assert {spec.name for spec in ctx.preset.loras} <= set(models)
    for model in models:  # every documented model is served
        response = client.post("/v1/images/generations", json={"prompt": "a desk", "model": model})
        assert response.status_code == 200, (model, response.text)


class _WokenChanges(TaskChanges):
    """TaskChanges that remember whether each wait ended on a pushed change or on its bound."""

    def __init__(self) -> None:
        super().__init__()
        self.woken: list[bool] = []

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:  # type: ignore[override]
        woken = await TaskChanges.wait(event, timeout_s)
        self.woken.append(woken)
        return woken


def test_a_waiting_request_is_woken_by_the_pushed_change_not_its_poll(ctx: IngressContext) -> None:
    """The store pushes the task's changes to the ingress (serve_app.tasks.notify): the waiting
    route reads the task when it changes. Here the poll is 5 s and the runner finishes the task
    after its first read; the answer comes from a wait that a push ended."""
    changes = _WokenChanges()
    ctx.changes = changes
    ctx.args = ctx.args.model_copy(update={"openai": ctx.args.openai.model_copy(update={"poll_s": 5.0})})
    ctx.runner = WorkerRunner(ctx, {"image": ImageFlow(FlowDeps(PaintingStages(), ctx.images))})  # type: ignore[arg-type,assignment]
    listener = ctx.tasks.db.listener()
    with TestClient(app) as client:
        client.portal.call(listener.start, changes.deliver)
        try:
            response = client.post("/v1/images/generations", json={"prompt": "a desk", "size": "64x64"})
        finally:
            client.portal.call(listener.close)
    assert response.status_code == 200, response.text
    assert changes.pushed > 0 and True in changes.woken


def test_an_edit_waits_for_its_images_holding_no_upload_budget(
    client: TestClient, ctx: IngressContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The photo is stored when the task is accepted; the budget bounds bodies being received, so a
    wait of up to openai.max_wait_s must not keep other callers' uploads out (503 UPLOADS_BUSY)."""
    from serve_app.api.intake import Submission

    held: list[int] = []
    wait = Submission.wait

    async def noting(self: Submission, *args: Any, **kwargs: Any) -> Any:
        held.append(self.ctx.uploads.used)
        return await wait(self, *args, **kwargs)

    monkeypatch.setattr(Submission, "wait", noting)
    response = client.post(
        "/v1/images/edits",
        files={"image": ("desk.png", png(120, 90), "image/png")},
        data={"prompt": "make the lighting warmer"},
    )
    assert response.status_code == 200, response.text
    assert held == [0]
