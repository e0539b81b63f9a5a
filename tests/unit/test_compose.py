"""Virtual try-on (`POST /api/compose-dress`): a person photo and a garment photo composed into one.

The route runs under TestClient with a real SQLite task store and local storage; its runner runs
the real ComposeFlow, whose chain is the real Gemini and OpenAI clients pointed at their stubs
(testbed/stubs/gemini_stub.py: generateContent with both images as inlineData parts;
openai_stub.py: /v1/images/edits with both as `image[]` parts).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serve_app.api.deps import IngressContext
from serve_app.backends import BackendRegistry
from serve_app.flows.kit import FlowDeps
from serve_app.ingress import app
from serve_app.products.compose.config import DEFAULT_INSTRUCTION
from serve_app.products.compose.flow import ComposeFlow
from testbed.harness import PaintingStages, WorkerRunner
from testbed.stubs.gemini_stub import KEY as GEMINI_KEY
from testbed.stubs.gemini_stub import GeminiStub
from testbed.stubs.openai_stub import KEY as OPENAI_KEY
from testbed.stubs.openai_stub import OpenAIStub
from testbed.stubs.provider_base import make_png
from tests.support.http_server import StaticServer
from tests.support.ingress import ingress_context

PERSON = make_png(60, 90, (200, 150, 120))
GARMENT = make_png(40, 40, (20, 40, 200))


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GeminiStub, OpenAIStub]]:
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with GeminiStub() as gemini, OpenAIStub() as openai:
        yield gemini, openai  # type: ignore[misc]


@pytest.fixture
def ctx(tmp_path: Path, stubs: tuple[GeminiStub, OpenAIStub]) -> Iterator[IngressContext]:
    gemini, openai = stubs
    fast = {"max_retries": 0, "timeout_s": 10}
    backends = {
        "gemini": {"base_url": gemini.base_url, **fast},
        "openai": {"base_url": openai.base_url + "/v1", **fast},
    }
    args = {"openai": {"max_wait_s": 20, "poll_s": 0.02}, "fetch": {"allow_hosts": ["127.0.0.1"]}}
    with ingress_context(tmp_path, {"max_active": 8}, backends=backends, **args) as context:
        yield context


@pytest.fixture
def client(ctx: IngressContext, stages: PaintingStages) -> Iterator[TestClient]:
    deps = FlowDeps(stages, ctx.images, backends=BackendRegistry(ctx.args.backends))  # type: ignore[arg-type]
    ctx.runner = WorkerRunner(ctx, {"compose": ComposeFlow(deps)})  # type: ignore[assignment]
    with TestClient(app) as running:
        yield running


def _compose(client: TestClient, person: bytes = PERSON, garment: bytes = GARMENT, **fields: str) -> Any:
    files = {"person_image": ("me.png", person, "image/png"), "garment_image": ("dress.png", garment, "image/png")}
    return client.post("/api/compose-dress", data=fields, files=files)


def test_two_photos_become_one_through_gemini(
    client: TestClient, ctx: IngressContext, stubs: tuple[GeminiStub, OpenAIStub]
) -> None:
    gemini, openai = stubs
    response = _compose(client, prompt="tuck the shirt in")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "gemini" and body["backend_model"] == "gemini-2.5-flash-image"
    assert body["url"] and body["cost_usd"] == 0.039 and body["prompt"] == "tuck the shirt in"
    assert (body["width"], body["height"]) == (60, 90)  # the stub answers the person's size
    assert response.headers["X-Task-Id"] == body["task_id"] and "backends_failed" not in body
    (sent,) = gemini.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    text, person, garment = sent.json()["contents"][0]["parts"]
    assert text["text"] == f"{DEFAULT_INSTRUCTION}\nAlso: tuck the shirt in"
    assert base64.b64decode(person["inlineData"]["data"]) == PERSON
    assert base64.b64decode(garment["inlineData"]["data"]) == GARMENT
    assert openai.requests == []
    # A durable task like the others: its record, the stored inputs kept with it for retention.
    task = client.get(f"/v1/result/{body['task_id']}").json()
    assert task["status"] == "done" and task["processed_image_url"] == body["url"]
    record = ctx.tasks.get(body["task_id"])
    assert record is not None and record.kind == "compose"
    assert len(record.object_keys) == 4  # the person, the garment, the image and its record
    assert record.object_keys[:2] == [record.input_key, *record.request["more_input_keys"]]
    stored = {path.name for path in Path(ctx.args.storage.root).rglob("*.png")}  # type: ignore[union-attr]
    assert {key.rsplit("/", 1)[-1] for key in record.object_keys if key.endswith(".png")} <= stored


def test_when_gemini_fails_openais_multi_image_edit_composes(
    client: TestClient, stubs: tuple[GeminiStub, OpenAIStub]
) -> None:
    gemini, openai = stubs
    gemini.add_rule("server_error", times=None)
    response = _compose(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "openai" and body["backend_model"] == "gpt-image-1"
    assert [failed["backend"] for failed in body["backends_failed"]] == ["gemini"]
    assert body["backends_failed"][0]["error_code"] == "UPSTREAM_ERROR"
    assert openai.edited_images == [PERSON, GARMENT]  # two image[] parts, the person first
    assert "prompt" not in body


def test_every_backend_failing_is_a_failed_task_with_each_reason(
    client: TestClient, stubs: tuple[GeminiStub, OpenAIStub]
) -> None:
    for stub in stubs:
        stub.add_rule("server_error", times=None)
    response = _compose(client)
    assert response.status_code == 500, response.text
    task = client.get(f"/v1/result/{response.headers['X-Task-Id']}").json()
    assert task["status"] == "failed" and task["error_code"] == "GENERATION_FAILED"
    assert [f["backend"] for f in task["backends_failed"]] == ["gemini", "openai"]


def test_photos_by_url_are_fetched(client: TestClient, stubs: tuple[GeminiStub, OpenAIStub]) -> None:
    with StaticServer() as server:
        server.add("/me.png", PERSON, headers={"Content-Type": "image/png"})
        server.add("/dress.png", GARMENT, headers={"Content-Type": "image/png"})
        body = {"person_image_url": server.url("/me.png"), "garment_image_url": server.url("/dress.png")}
        response = client.post("/api/compose-dress", json=body)
        fetched = sorted(request.path for request in server.requests)
    assert response.status_code == 200, response.text
    assert fetched == ["/dress.png", "/me.png"]
    parts = stubs[0].requests[0].json()["contents"][0]["parts"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[1:]] == [PERSON, GARMENT]


def test_respond_async_answers_202(client: TestClient, ctx: IngressContext) -> None:
    ctx.runner.hold = True  # type: ignore[attr-defined]
    files = {"person_image": ("a.png", PERSON, "image/png"), "garment_image": ("b.png", GARMENT, "image/png")}
    response = client.post("/api/compose-dress", files=files, headers={"Prefer": "respond-async"})
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_without_a_configured_compose_backend_it_is_503_and_records_nothing(
    client: TestClient, ctx: IngressContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    response = _compose(client)
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["error_code"] == "COMPOSE_NOT_CONFIGURED"
    assert "$GEMINI_API_KEY" in answer["message"] and "$OPENAI_API_KEY" in answer["message"]
    assert ctx.tasks.count_active() == 0


def test_one_configured_backend_is_enough(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    body = _compose(client).json()
    assert body["backend"] == "openai" and body["backends_failed"][0]["error_code"] == "BACKEND_NOT_CONFIGURED"


@pytest.mark.parametrize(
    ("files", "data", "needle"),
    [
        ({"person_image": ("a.png", PERSON, "image/png")}, {}, "garment_image: required"),
        ({"garment_image": ("a.png", GARMENT, "image/png")}, {}, "person_image: required"),
        (
            {"person_image": ("a.png", PERSON, "image/png"), "garment_image": ("b.png", b"no image", "image/png")},
            {},
            "INVALID_IMAGE",
        ),
        (
            {
                "person_image": ("a.png", PERSON, "image/png"),
                "garment_image": ("b.png", GARMENT, "image/png"),
                "image": ("c.png", GARMENT, "image/png"),
            },
            {},
            "unexpected file part",
        ),
        (
            {"person_image": ("a.png", PERSON, "image/png"), "garment_image": ("b.png", GARMENT, "image/png")},
            {"prompt": "   "},
            "prompt",
        ),
        (
            {"person_image": ("a.png", PERSON, "image/png"), "garment_image": ("b.png", GARMENT, "image/png")},
            {"strength": "0.5"},
            "strength",
        ),
    ],
)
def test_bad_requests_are_422_and_keep_nothing(
    client: TestClient, ctx: IngressContext, files: Any, data: dict[str, str], needle: str
) -> None:
    form = {name: (None, value) for name, value in data.items()}
    response = client.post("/api/compose-dress", files={**form, **files})
    assert response.status_code == 422, response.text
    assert needle in response.text
    assert ctx.tasks.count_active() == 0
    assert not list(Path(ctx.args.storage.root).rglob("*.png"))  # no photo stored  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [{}, {"person_image_url": "https://example.com/a.png"}, {"person_image_url": 1, "garment_image_url": "x"}],
)
def test_a_json_body_needs_both_urls(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/api/compose-dress", json=body)
    assert response.status_code == 422 and "image_url" in response.text


def test_a_url_the_server_may_not_fetch_is_refused(client: TestClient, ctx: IngressContext) -> None:
    body = {"person_image_url": "http://169.254.169.254/a.png", "garment_image_url": "http://169.254.169.254/b"}
    response = client.post("/api/compose-dress", json=body)
    assert response.status_code == 422 and response.json()["error_code"] == "UNSAFE_URL"
    assert ctx.tasks.count_active() == 0


def test_the_openapi_document_has_both_bodies_and_the_answers(client: TestClient) -> None:
    app.openapi_schema = None
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/compose-dress"]["post"]
    assert {"200", "202", "422", "500", "503", "504"} <= operation["responses"].keys()
    assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    schemas = document["components"]["schemas"]
    form = schemas["ComposeRequest"]
    assert form["required"] == ["person_image", "garment_image"] and "image" not in form["properties"]
    assert form["properties"]["person_image"]["format"] == form["properties"]["garment_image"]["format"] == "binary"
    assert "prompt" in form["properties"] and form["examples"]
    urls = schemas["ComposeUrlsRequest"]
    assert set(urls["required"]) == {"person_image_url", "garment_image_url"} and urls["additionalProperties"] is False
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/ComposeResponse")
    assert {"task_id", "url", "backend", "width", "height"} <= set(schemas["ComposeResponse"]["required"])


def test_a_compose_chain_of_backends_that_cannot_compose_is_refused() -> None:
    from serve_app.config import AppArgs

    for chain in (["gemini", "local"], ["kling"], ["openai", "stability"]):
        with pytest.raises(ValidationError, match="cannot compose several images"):
            AppArgs.model_validate({"backends": {"chains": {"compose": chain}}})
    default = AppArgs.model_validate({"backends": {"chains": {"edit": ["local"]}}})
    assert default.backends.chains["compose"] == ["gemini", "openai:gpt-image-1"]  # the product's default


def test_the_in_cluster_models_do_not_compose(stages: PaintingStages) -> None:
    import asyncio

    from serve_app.backends.base import ComposeNotSupported
    from serve_app.backends.config import LocalBackendConfig
    from serve_app.backends.local import LocalBackend
    from tests.support.specs import txt2img

    spec = txt2img(init_image_png=PERSON, reference_images_png=[GARMENT])
    with pytest.raises(ComposeNotSupported):
        asyncio.run(LocalBackend(stages.generate, LocalBackendConfig()).generate(spec))
    assert stages.specs == []


# -- the shared budgets and slots, as on /v1/edits ------------------------------------------------


def test_past_the_decoded_pixel_budget_it_is_503_and_keeps_nothing(tmp_path: Path, stubs: Any) -> None:
    admission = {"decoded_pixels_in_flight": 1024 * 1024, "decode_wait_s": 0}
    with ingress_context(tmp_path, {"max_active": 8, "retry_after_s": 7}, admission=admission) as context:
        import asyncio

        loop = asyncio.new_event_loop()
        hold = context.pixels.hold(1024 * 1024)  # another request's image is being decoded
        loop.run_until_complete(hold.__aenter__())
        try:
            response = _compose(TestClient(app))
        finally:
            loop.run_until_complete(hold.__aexit__(None, None, None))
            loop.close()
        assert response.status_code == 503 and response.json()["error_code"] == "DECODES_BUSY"
        assert context.tasks.count_active() == 0 and context.pixels.used == 0 and context.uploads.used == 0
        assert not list(Path(context.args.storage.root).rglob("*.png"))  # type: ignore[union-attr]


def test_past_the_upload_budget_a_url_is_refused_before_it_is_fetched(tmp_path: Path, stubs: Any) -> None:
    admission = {"upload_bytes_in_flight": 200_000}
    args = {"fetch": {"allow_hosts": ["127.0.0.1"]}}
    with ingress_context(tmp_path, {"max_active": 8}, admission=admission, **args) as context, StaticServer() as srv:
        srv.add("/me.png", PERSON, headers={"Content-Type": "image/png"})
        body = {"person_image_url": srv.url("/me.png"), "garment_image_url": srv.url("/me.png")}
        with context.uploads.hold() as take:
            take(150_000)  # uploads being received: less room than a fetched photo may need
            response = TestClient(app).post("/api/compose-dress", json=body)
        assert response.status_code == 503 and response.json()["error_code"] == "UPLOADS_BUSY"
        assert srv.requests == [] and context.tasks.count_active() == 0


def test_the_route_holds_a_long_request_slot_while_it_waits() -> None:
    from fastapi.routing import APIRoute

    from serve_app.api.slots import LONG
    from serve_app.products.compose.route import router

    (route,) = [r for r in router.routes if isinstance(r, APIRoute) and r.path == "/api/compose-dress"]
    assert LONG.dependency in [dependency.call for dependency in route.dependant.dependencies]
