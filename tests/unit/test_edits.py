"""Instruction edits (`POST /v1/edits`): the route, the EditFlow and its chain, the tiny
InstructPix2Pix engine, and the cloud edit clients against their stubs.

The route runs under TestClient with a real SQLite task store and local storage; its runner runs
the real EditFlow over an Editor stand-in that paints one PNG per spec (the tiny engine itself is
tested below, and through Serve in tests/integration/test_products.py).
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
from pydantic import ValidationError

from serve_app.api.deps import IngressContext
from serve_app.backends import BackendRegistry
from serve_app.backends.base import BackendImage, EditNotSupported
from serve_app.backends.config import BackendsConfig, FaceRestorationConfig
from serve_app.backends.restoration import FaceRestorer, ReplicateFaceRestorer, build_restorer
from serve_app.errors import UpstreamError
from serve_app.flows.kit import FlowDeps
from serve_app.ingress import app
from serve_app.presets import load_preset
from serve_app.products.edits.flow import EditFlow
from serve_app.stages import GenerationSpec
from testbed.harness import PaintingStages, WorkerRunner
from testbed.stubs.openai_stub import KEY as OPENAI_KEY
from testbed.stubs.openai_stub import OpenAIStub
from testbed.stubs.provider_base import multipart, stub_fetch
from testbed.stubs.replicate_stub import ReplicateStub
from tests.support.ingress import ingress_context
from tests.support.specs import txt2img
from tests.support.stages import ScriptedBackend, wait_result


def _png(width: int = 96, height: int = 64, color: tuple[int, int, int] = (200, 100, 50)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    chains = {"edit": ["local", "openai:gpt-image-1"]}
    openai = {"max_wait_s": 20, "poll_s": 0.02}
    with ingress_context(tmp_path, {"max_active": 8}, openai=openai, backends={"chains": chains}) as context:
        yield context


@pytest.fixture
def registry(ctx: IngressContext) -> BackendRegistry:
    registry = BackendRegistry(ctx.args.backends, "painter", "tiny-ip2p")
    registry._cloud["openai:gpt-image-1"] = ScriptedBackend("openai")
    return registry


class ScriptedRestorer(FaceRestorer):
    """A restorer that answers a 40x40 image (or fails with `error`)."""

    name = "replicate"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.seen: list[bytes] = []

    async def restore(self, image_png: bytes) -> BackendImage:
        self.seen.append(image_png)
        if self.error is not None:
            raise self.error
        return BackendImage(
            image_png=_png(40, 40, (1, 2, 3)), backend="replicate", model="gfpgan", seconds=0.1, cost_usd=0.002
        )


@pytest.fixture
def restorer() -> ScriptedRestorer:
    return ScriptedRestorer()


@pytest.fixture
def client(
    ctx: IngressContext, stages: PaintingStages, registry: BackendRegistry, restorer: ScriptedRestorer
) -> Iterator[TestClient]:
    deps = FlowDeps(stages, ctx.images, backends=registry)  # type: ignore[arg-type]
    ctx.runner = WorkerRunner(ctx, {"edit": EditFlow(deps, restorer=restorer)})  # type: ignore[assignment]
    with TestClient(app) as running:
        yield running


def _edit(client: TestClient, image: bytes | None = None, **fields: Any) -> Any:
    data = {"instruction": "make the lighting warmer", **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/edits", data=data, files={"image": ("desk.png", image or _png(), "image/png")})


def test_an_edit_runs_on_the_editor_with_the_image_and_the_instruction(
    client: TestClient, stages: PaintingStages
) -> None:
    source = _png()
    response = _edit(client, source, seed=7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "local" and body["backend_model"] == "painter" and body["seed"] == 7
    assert body["instruction"] == body["edit_prompt"] == "make the lighting warmer"
    (spec,) = stages.specs
    assert spec.is_edit and spec.prompt == "make the lighting warmer" and spec.image_guidance_scale == 1.5
    assert spec.init_image_png == source  # the upload as sent (a PNG is stored as it came)
    assert (body["width"], body["height"]) == (spec.width, spec.height) and spec.width > spec.height  # 3:2 kept
    image = client.get(body["url"].removeprefix("http://t"))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    result = wait_result(client, body["task_id"])
    assert result["image_guidance_scale"] == 1.5 and result["cost_usd"] >= 0


def test_a_korean_instruction_reaches_the_editor_in_english(client: TestClient, stages: PaintingStages) -> None:
    body = _edit(client, instruction="조명을 따뜻하게").json()
    assert body["instruction"] == "조명을 따뜻하게"
    assert body["edit_prompt"] == stages.specs[0].prompt and "warm" in body["edit_prompt"]
    result = wait_result(client, body["task_id"])
    assert result["translations"]["instruction"]["source"] == "조명을 따뜻하게"


def test_one_step_is_a_valid_edit(client: TestClient, stages: PaintingStages) -> None:
    """No img2img strength applies: an InstructPix2Pix edit runs every step on the image's latents."""
    response = _edit(client, num_inference_steps=1)
    assert response.status_code == 200, response.text
    assert stages.specs[0].num_inference_steps == 1


def test_rewrite_asks_the_prompt_writer_for_the_edit_prompt(client: TestClient, stages: PaintingStages) -> None:
    body = _edit(client, instruction="  make   the desk   brighter.  ", rewrite="true").json()
    assert body["edit_prompt"] == stages.specs[0].prompt == "make the desk brighter"
    assert wait_result(client, body["task_id"])["writer"] == "template"


def test_a_failing_editor_falls_back_to_the_cloud_edit_and_says_why(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry
) -> None:
    stages.fail_with = RuntimeError("CUDA out of memory")
    body = _edit(client).json()
    assert body["backend"] == "openai" and body["cost_usd"] == 0.01
    assert [entry["backend"] for entry in body["backends_failed"]] == ["local"]
    cloud = registry._cloud["openai:gpt-image-1"]
    assert cloud.specs[0].is_edit and cloud.specs[0].init_image_png  # type: ignore[attr-defined]


def test_an_ab_test_on_edits_sends_its_callers_to_their_arm_and_records_it(
    client: TestClient, ctx: IngressContext, stages: PaintingStages
) -> None:
    from serve_app.backends.config import Variant

    ctx.args.backends.experiments["edit"] = [Variant(name="cloud-first", percent=100, chain=["openai:gpt-image-1"])]
    body = _edit(client, user_id="u1").json()
    assert body["variant"] == "cloud-first" and body["backend"] == "openai" and stages.specs == []
    assert wait_result(client, body["task_id"])["variant"] == "cloud-first"
    assert _edit(client, user_id="u1", backend="local").json()["backend"] == "local"  # asked for: no arm


@pytest.mark.parametrize(("backend", "used"), [("cloud", "openai"), ("local", "local")])
def test_backend_picks_one_side_of_the_chain(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry, backend: str, used: str
) -> None:
    body = _edit(client, backend=backend).json()
    assert body["backend"] == used
    assert bool(stages.specs) == (used == "local")
    assert bool(registry._cloud["openai:gpt-image-1"].specs) == (used == "openai")  # type: ignore[attr-defined]


def test_local_only_does_not_fall_back(client: TestClient, stages: PaintingStages, registry: BackendRegistry) -> None:
    stages.fail_with = RuntimeError("boom")
    response = _edit(client, backend="local")
    assert response.status_code == 500 and response.json()["error_code"] == "GENERATION_FAILED"
    result = wait_result(client, response.headers["x-task-id"])
    assert [entry["backend"] for entry in result["backends_failed"]] == ["local"]
    assert registry._cloud["openai:gpt-image-1"].specs == []  # type: ignore[attr-defined]


def test_every_backend_failing_fails_the_task_with_each_reason(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry
) -> None:
    stages.fail_with = RuntimeError("boom")
    registry._cloud["openai:gpt-image-1"].error = UpstreamError("busy", error_code="RATE_LIMITED")  # type: ignore[attr-defined]
    response = _edit(client)
    assert response.status_code == 500
    result = wait_result(client, response.headers["x-task-id"])
    assert [(e["backend"], e["error_code"]) for e in result["backends_failed"]] == [
        ("local", "GENERATION_FAILED"),
        ("openai", "RATE_LIMITED"),
    ]


def test_restore_faces_runs_the_restorer_on_the_edit(
    client: TestClient, stages: PaintingStages, restorer: ScriptedRestorer
) -> None:
    body = _edit(client, restore_faces="true", seed=3).json()
    assert body["face_restoration"]["restored"] is True and body["face_restoration"]["backend"] == "replicate"
    assert (body["width"], body["height"]) == (40, 40)  # the restorer's image is the one delivered
    assert len(restorer.seen) == 1 and body["seed"] == 3
    stored = Image.open(io.BytesIO(client.get(body["url"].removeprefix("http://t")).content))
    assert stored.size == (40, 40)
    result = wait_result(client, body["task_id"])
    assert result["cost_usd"] >= 0.002 and "restore" in result["timings"]


def test_a_failed_restoration_still_delivers_the_edit_and_says_why(
    client: TestClient, stages: PaintingStages, restorer: ScriptedRestorer
) -> None:
    restorer.error = UpstreamError("Replicate prediction x failed: CUDA OOM", error_code="UPSTREAM_ERROR")
    response = _edit(client, restore_faces="true")
    assert response.status_code == 200
    body = response.json()
    assert body["face_restoration"] == {
        "restored": False,
        "error_code": "UPSTREAM_ERROR",
        "message": "Replicate prediction x failed: CUDA OOM",
    }
    assert (body["width"], body["height"]) == (stages.specs[0].width, stages.specs[0].height)


def test_restore_faces_is_422_when_restoration_is_off(client: TestClient, ctx: IngressContext) -> None:
    ctx.args.edits.face_restoration.provider = "off"
    response = _edit(client, restore_faces="true")
    assert response.status_code == 422 and "face restoration is off" in response.json()["message"]
    assert ctx.tasks.count_active() == 0
    assert build_restorer(FaceRestorationConfig(provider="off"), BackendsConfig()) is None


def test_gfpgan_on_replicate_gets_the_image_and_answers_the_restored_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.stubs.replicate_stub import TOKEN

    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    source = _png(64, 64)
    with ReplicateStub() as stub:
        backends = BackendsConfig.model_validate(
            {"replicate": {**BackendsConfig().cloud("replicate").model_dump(), "base_url": stub.base_url + "/v1"}}
        )
        backends.cloud("replicate").poll_interval_s = 0.01
        restorer = build_restorer(FaceRestorationConfig(), backends, stub_fetch())
        assert isinstance(restorer, ReplicateFaceRestorer)
        restored = asyncio.run(restorer.restore(source))
        create = next(r for r in stub.requests if r.method == "POST")
    assert restored.image_png.startswith(b"\x89PNG") and restored.cost_usd == 0.0023
    body = create.json()
    assert create.path == "/v1/predictions" and body["version"].startswith("0fbacf7a")
    assert set(body["input"]) == {"img", "version", "scale"}
    assert base64.b64decode(body["input"]["img"].removeprefix("data:image/png;base64,")) == source
    assert body["input"]["version"] == "v1.4" and body["input"]["scale"] == 1.0


@pytest.mark.parametrize(
    ("files", "data", "needle"),
    [
        ({"image": ("a.png", _png(), "image/png")}, {}, "instruction"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "   "}, "instruction"),
        (None, {"instruction": "x"}, "image: required"),
        ({"image": ("a.png", b"not an image", "image/png")}, {"instruction": "x"}, "INVALID_IMAGE"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "x", "width": "64"}, "give both"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "x", "image_guidance_scale": "9"}, "between 1"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "x", "backend": "gpu"}, "backend"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "x", "strength": "0.5"}, "strength"),
        ({"image": ("a.png", _png(), "image/png")}, {"instruction": "x", "num_inference_steps": "0"}, "steps"),
        (
            {"image": ("a.png", _png(), "image/png"), "mask": ("m.png", _png(), "image/png")},
            {"instruction": "x"},
            "mask",
        ),
    ],
)
def test_bad_edits_are_422_and_record_nothing(
    client: TestClient, ctx: IngressContext, files: Any, data: dict[str, str], needle: str
) -> None:
    form = {name: (None, value) for name, value in data.items()}  # multipart even without a file part
    response = client.post("/v1/edits", files={**form, **(files or {})})
    assert response.status_code == 422, response.text
    assert needle in response.text
    assert ctx.tasks.count_active() == 0


def test_a_json_body_is_refused_with_the_form_it_needs(client: TestClient) -> None:
    response = client.post("/v1/edits", json={"instruction": "x"})
    assert response.status_code == 422 and "multipart/form-data" in response.json()["message"]


@pytest.mark.parametrize(("route", "status"), [("/v1/edits", 422), ("/v1/generate", 422), ("/v1/images/edits", 400)])
def test_a_malformed_multipart_body_is_the_routes_invalid_input(
    client: TestClient, ctx: IngressContext, route: str, status: int
) -> None:
    # What the fuzz run sent: a boundary, then straight to the closing boundary (no part headers).
    boundary = "4bea7452f2ee0b8418ae8c1020a88206"
    body = f"--{boundary}\r\n--{boundary}--\r\n".encode()
    response = client.post(route, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    answer = response.json()
    assert response.status_code == status, answer
    assert (answer.get("error_code") or answer["error"]["code"]) == "INVALID_INPUT"
    assert "multipart" in (answer.get("message") or answer["error"]["message"])
    assert ctx.tasks.count_active() == 0


def test_respond_async_answers_202(client: TestClient, ctx: IngressContext) -> None:
    ctx.runner.hold = True  # type: ignore[attr-defined]
    response = client.post(
        "/v1/edits",
        data={"instruction": "make it blue"},
        files={"image": ("a.png", _png(), "image/png")},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_the_openapi_document_has_the_edit_form_and_its_answers(client: TestClient) -> None:
    app.openapi_schema = None
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/edits"]["post"]
    assert {"202", "422", "500", "504"} <= operation["responses"].keys()
    form = document["components"]["schemas"]["EditRequest"]
    assert form["required"] == ["image", "instruction"] and form["properties"]["image"]["format"] == "binary"
    # An optional field: its rule, or sent empty (read as left out, as HTML forms send them).
    scale, empty = form["properties"]["image_guidance_scale"]["anyOf"]
    assert scale["minimum"] == 1 and empty == {"type": "string", "maxLength": 0}
    assert set(form["properties"]["backend"]["anyOf"][0]["enum"]) == {"auto", "local", "cloud"}
    assert form["examples"][0]["instruction"]  # an example, as every product route has


def test_an_edit_chain_of_backends_that_cannot_edit_is_refused() -> None:
    from serve_app.config import AppArgs

    with pytest.raises(ValidationError, match="cannot edit an image"):
        AppArgs.model_validate({"backends": {"chains": {"edit": ["local", "kling"]}}})
    AppArgs.model_validate({"backends": {"chains": {"edit": ["replicate:timbrooks/instruct-pix2pix:abc", "local"]}}})


# -- the tiny InstructPix2Pix engine -----------------------------------------------------------------


def _spec(seed: int, image: bytes, **update: Any) -> GenerationSpec:
    edit = {"prompt": "make it warmer", "num_inference_steps": 3, "image_guidance_scale": 1.5}
    return txt2img(**(edit | update), seed=seed, init_image_png=image)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serve_app.models.edit_engine import EditEngine

    return EditEngine(load_preset("tiny").editor, tmp_path_factory.mktemp("ip2p"))


def test_the_tiny_editor_is_an_8_channel_instruct_pix2pix(engine: Any) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    assert isinstance(engine.pipe, StableDiffusionInstructPix2PixPipeline)
    assert engine.pipe.unet.config.in_channels == 8


def test_the_editor_edits_per_seed_and_follows_the_image(engine: Any) -> None:
    import numpy as np

    red, blue = _png(64, 64, (220, 30, 30)), _png(64, 64, (30, 30, 220))
    steps: list[tuple[int, int]] = []
    alone = engine.generate([_spec(1, red)], on_step=lambda done, total: steps.append((done, total)))[0]
    batch = engine.generate([_spec(2, red), _spec(1, red), _spec(1, blue)])
    assert steps[-1] == (3, 3) and batch[0].batch_size == 3

    def pixels(png: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    assert pixels(alone.image_png).shape == (64, 64, 3)
    assert np.abs(pixels(alone.image_png) - pixels(batch[1].image_png)).max() <= 2  # the seed, alone or batched
    assert np.abs(pixels(batch[1].image_png) - pixels(batch[2].image_png)).mean() > 1  # the source image matters


def test_the_editor_refuses_a_spec_that_is_not_an_edit(engine: Any) -> None:
    from serve_app.errors import InvalidInput

    with pytest.raises(InvalidInput):
        engine.generate([_spec(1, _png(64, 64)).model_copy(update={"image_guidance_scale": None})])


# -- cloud edit clients against their stubs ------------------------------------------------------------


@pytest.fixture
def openai_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with OpenAIStub() as stub:
        yield stub  # type: ignore[misc]


def _openai(stub: OpenAIStub, model: str) -> Any:
    from serve_app.backends.providers.openai_images import OpenAIImagesBackend

    cfg = BackendsConfig().cloud("openai").model_copy(update={"base_url": stub.base_url + "/v1", "model": model})
    return OpenAIImagesBackend(cfg)


def test_openai_edits_send_the_image_as_a_multipart_file(openai_stub: OpenAIStub) -> None:
    source = _png(64, 64)
    backend = _openai(openai_stub, "gpt-image-1")
    made = asyncio.run(backend.generate(_spec(3, source)))
    assert made.backend == "openai" and made.model == "gpt-image-1" and made.image_png.startswith(b"\x89PNG")
    assert "image_guidance_scale" in made.ignored and "init_image" not in made.ignored
    (sent,) = openai_stub.requests
    assert sent.path == "/v1/images/edits"
    fields, files = multipart(sent)
    assert fields == {"model": "gpt-image-1", "prompt": "make it warmer", "n": "1", "size": "1024x1024"}
    assert files["image"] == source


def test_openai_models_that_cannot_edit_say_so_without_a_request(openai_stub: OpenAIStub) -> None:
    with pytest.raises(EditNotSupported, match="dall-e-3 cannot edit"):
        asyncio.run(_openai(openai_stub, "dall-e-3").generate(_spec(3, _png(64, 64))))
    assert openai_stub.requests == []


def test_the_stub_refuses_an_edit_without_an_image(openai_stub: OpenAIStub) -> None:
    import httpx

    response = httpx.post(
        openai_stub.base_url + "/v1/images/edits",
        headers={"Authorization": f"Bearer {OPENAI_KEY}"},
        files={"model": (None, "gpt-image-1"), "prompt": (None, "x"), "size": (None, "1024x1024")},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"


def test_replicate_edits_send_instruct_pix2pix_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.backends.providers.replicate import ReplicateBackend
    from testbed.stubs.replicate_stub import TOKEN as REPLICATE_KEY

    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_KEY)
    source = _png(64, 64)
    with ReplicateStub() as stub:
        cfg = (
            BackendsConfig()
            .cloud("replicate")
            .model_copy(
                update={
                    "base_url": stub.base_url + "/v1",
                    "model": "timbrooks/instruct-pix2pix:30c1d0b9",
                    "poll_interval_s": 0.01,
                }
            )
        )
        made = asyncio.run(
            ReplicateBackend(cfg, fetch=stub_fetch()).generate(_spec(5, source, image_guidance_scale=2.0))
        )
        create = next(r for r in stub.requests if r.method == "POST")
    assert made.backend == "replicate" and made.ignored == []
    body = create.json()
    assert create.path == "/v1/predictions" and body["version"] == "30c1d0b9"
    inputs = body["input"]
    assert base64.b64decode(inputs["image"].removeprefix("data:image/png;base64,")) == source
    assert inputs["image_guidance_scale"] == 2.0 and inputs["prompt"] == "make it warmer" and inputs["seed"] == 5
    assert "aspect_ratio" not in inputs


def test_a_backend_that_cannot_edit_refuses_an_edit_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.backends.providers.kling import KlingBackend

    monkeypatch.setenv("KLING_ACCESS_KEY", "a")
    monkeypatch.setenv("KLING_SECRET_KEY", "b")
    cfg = BackendsConfig().cloud("kling").model_copy(update={"base_url": "http://127.0.0.1:9"})
    with pytest.raises(EditNotSupported, match="cannot edit"):
        asyncio.run(KlingBackend(cfg).generate(_spec(1, _png(64, 64))))


def test_stability_edits_are_its_image_to_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.backends.providers.stability import StabilityBackend
    from testbed.stubs.stability_stub import KEY as STABILITY_KEY
    from testbed.stubs.stability_stub import StabilityStub

    monkeypatch.setenv("STABILITY_API_KEY", STABILITY_KEY)
    source = _png(64, 64)
    with StabilityStub() as stub:
        base = BackendsConfig().cloud("stability").model_copy(update={"base_url": stub.base_url})
        made = asyncio.run(StabilityBackend(base.model_copy(update={"model": "sd3"})).generate(_spec(9, source)))
        with pytest.raises(EditNotSupported, match="core takes no image"):
            asyncio.run(StabilityBackend(base).generate(_spec(9, source)))
        (sent,) = stub.requests
    assert made.backend == "stability" and "init_image" not in made.ignored and "image_guidance_scale" in made.ignored
    assert sent.path == "/v2beta/stable-image/generate/sd3"
    fields, files = multipart(sent)
    assert fields["mode"] == "image-to-image" and fields["strength"] == "0.6" and "aspect_ratio" not in fields
    assert files["image"] == source and fields["prompt"] == "make it warmer" and fields["seed"] == "9"
