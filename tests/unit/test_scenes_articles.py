"""Scene images (`/api/v1/images/generations/{internal,external}`), article images
(`/v1/articles/images`), texture images (`/v1/textures`) and the Korean -> English step of the
image flow, without Ray.

The ingress app runs under TestClient with a real SQLite task store and local storage; its runner
runs the real SceneFlow / ArticleFlow / ImageFlow over a Generator stand-in that paints one PNG per
spec, with the real template prompt writer and the real fallback chains. Cloud backends are real
provider clients pointed at their stub servers in tests/unit/test_backend_contract.py and in the
integration tests; here a chain's cloud member is a scripted backend, so the chain's behaviour
(order, fallback, records) is what is tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from serve_app.api.deps import IngressContext
from serve_app.backends import BackendRegistry
from serve_app.backends.config import BackendsConfig, Variant
from serve_app.errors import UpstreamError
from serve_app.flows.kit import FlowDeps
from serve_app.ingress import app
from serve_app.models.translation import TranslationEngine
from serve_app.products.articles.flow import ArticleFlow
from serve_app.products.images.flow import ImageFlow
from serve_app.products.scenes.flow import SceneFlow
from serve_app.products.textures.flow import TextureFlow
from serve_app.settings import variable_names
from serve_app.writing import PromptWriter, TemplateWriter, build_writer
from serve_app.writing.config import PromptWriterConfig
from serve_app.writing.glossary import has_hangul
from testbed.harness import PaintingStages, WorkerRunner, load_serve_config
from tests.support.bodies import jackson_article, jackson_scene, scene_body
from tests.support.ingress import ingress_context
from tests.support.stages import ScriptedBackend, wait_result

SCENE = scene_body(7)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    chains = {
        "scene_internal": ["local"],
        "scene_external": ["kling", "local"],
        "article": ["local", "huggingface"],
        "texture": ["local", "huggingface"],
    }
    openai = {"max_wait_s": 20, "poll_s": 0.02}
    with ingress_context(tmp_path, {"max_active": 8}, openai=openai, backends={"chains": chains}) as context:
        yield context


@pytest.fixture
def registry(ctx: IngressContext) -> BackendRegistry:
    registry = BackendRegistry(ctx.args.backends, "painter")
    registry._cloud["kling"] = ScriptedBackend("kling")
    registry._cloud["huggingface"] = ScriptedBackend("huggingface")
    return registry


@pytest.fixture
def writer(request: pytest.FixtureRequest) -> PromptWriter:
    """The glossary alone; with `indirect` "translator", the chain with the tiny Translator model."""
    if getattr(request, "param", None) != "translator":
        return TemplateWriter()
    engine: TranslationEngine = request.getfixturevalue("tiny_translator")

    async def translate(text: str) -> str:
        return (await asyncio.to_thread(engine.translate, [text]))[0]

    return build_writer(PromptWriterConfig(), translate, "tiny")


@pytest.fixture
def runner(
    ctx: IngressContext, stages: PaintingStages, registry: BackendRegistry, writer: PromptWriter
) -> WorkerRunner:
    deps = FlowDeps(stages, ctx.images, backends=registry, writer=writer, task_store=ctx.tasks)  # type: ignore[arg-type]
    flows = {
        "image": ImageFlow(deps),
        "scene": SceneFlow(deps),
        "article": ArticleFlow(deps),
        "texture": TextureFlow(deps, cache=ctx.tasks),
    }
    ctx.runner = WorkerRunner(ctx, flows)  # type: ignore[assignment]
    return ctx.runner  # type: ignore[return-value]


@pytest.fixture
def client(ctx: IngressContext, runner: WorkerRunner) -> Iterator[TestClient]:
    with TestClient(app) as running:  # one event loop for the whole test: 202 answers' tasks run on in it
        yield running


def break_backends(stages: PaintingStages, registry: BackendRegistry, broken: bool = True) -> None:
    """Make the Generator (out of memory) and Hugging Face (loading) fail, or work again."""
    stages.fail_with = RuntimeError("out of memory") if broken else None
    loading = UpstreamError("loading", error_code="UPSTREAM_ERROR") if broken else None
    registry._cloud["huggingface"].error = loading  # type: ignore[attr-defined]


def posted(client: TestClient, route: str, body: dict[str, Any], status: int = 200, **kwargs: Any) -> Response:
    """The answer to `body` at `route`, checked to have `status`."""
    response = client.post(route, json=body, **kwargs)
    assert response.status_code == status, response.text
    return response


def refused(client: TestClient, ctx: IngressContext, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a bad `body` at `route`, checked to be a 422 that made no task."""
    response = posted(client, route, body, 422)
    assert ctx.tasks.db.read("SELECT task_id FROM tasks") == []
    return response.json()


# -- scenes ------------------------------------------------------------------------------------------


def test_internal_scene_answers_the_source_specs_shape_from_the_generator(
    client: TestClient, stages: PaintingStages
) -> None:
    response = posted(client, "/api/v1/images/generations/internal", SCENE)
    body = response.json()
    assert body["scene_id"] == 1 and body["backend"] == "local" and body["task_id"] == response.headers["x-task-id"]
    assert body["image_prompt"].startswith("a cinematic film still") and not has_hangul(body["image_prompt"])
    assert "a woman (long hair woman student)" in body["image_prompt"]
    assert body["cost_usd"] >= 0 and body["backend_seconds"] >= 0
    image = client.get(body["image_s3url"].removeprefix("http://t"))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert stages.specs[-1].prompt == body["image_prompt"]


def test_scenes_of_one_script_share_seed_and_another_script_does_not(
    client: TestClient, stages: PaintingStages
) -> None:
    for scene_id, script_id in ((1, 7), (2, 7), (3, 8)):
        body = {**SCENE, "scene_id": scene_id, "script_metadata": {**SCENE["script_metadata"], "script_id": script_id}}
        assert client.post("/api/v1/images/generations/internal", json=body).status_code == 200
    seeds = [spec.seed for spec in stages.specs]
    assert seeds[0] == seeds[1] != seeds[2]


def test_external_scene_uses_the_cloud_backend_first(
    client: TestClient, registry: BackendRegistry, stages: PaintingStages
) -> None:
    response = posted(client, "/api/v1/images/generations/external", SCENE)
    body = response.json()
    assert body["backend"] == "kling" and body["cost_usd"] == 0.01 and "backends_failed" not in body
    assert stages.specs == []  # the Generator was not asked
    assert registry._cloud["kling"].specs[0].prompt == body["image_prompt"]  # type: ignore[attr-defined]


def test_external_scene_falls_back_to_the_generator_and_says_why(client: TestClient, registry: BackendRegistry) -> None:
    registry._cloud["kling"].error = UpstreamError("KLING is busy (HTTP 429).", error_code="RATE_LIMITED")  # type: ignore[attr-defined]
    body = client.post("/api/v1/images/generations/external", json=SCENE).json()
    assert body["backend"] == "local"
    assert body["backends_failed"] == [
        {"backend": "kling", "error_code": "RATE_LIMITED", "message": "KLING is busy (HTTP 429)."}
    ]


def test_every_backend_failing_fails_the_scene_with_the_chain_in_the_result(
    client: TestClient, registry: BackendRegistry, stages: PaintingStages
) -> None:
    registry._cloud["kling"].error = UpstreamError("down", error_code="UPSTREAM_ERROR")  # type: ignore[attr-defined]
    stages.fail_with = RuntimeError("CUDA error")
    response = client.post("/api/v1/images/generations/external", json=SCENE)
    assert response.status_code == 500
    assert response.json()["error_code"] == "GENERATION_FAILED"
    result = wait_result(client, response.headers["x-task-id"])
    assert result["status"] == "failed"
    assert [entry["backend"] for entry in result["backends_failed"]] == ["kling", "local"]


def test_scene_respond_async_answers_202(client: TestClient, runner: WorkerRunner) -> None:
    runner.hold = True
    response = client.post("/api/v1/images/generations/internal", json=SCENE, headers={"Prefer": "respond-async"})
    assert response.status_code == 202 and response.json()["status"] == "queued"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"audios": []}, "audios"),
        ({"audios": [{"type": "dialogue", "character": "누구", "text": "안녕"}]}, "not in script_metadata.characters"),
        ({"audios": [{"type": "dialogue", "text": "안녕"}]}, "needs its character"),
        ({"script_metadata": {**SCENE["script_metadata"], "characters": [{"name": "a", "gender": 2}]}}, "gender"),
        ({"script_metadata": {**SCENE["script_metadata"], "title": "  "}}, "title"),
        ({"scene_id": None}, "scene_id"),  # null is a field left out, and scene_id is required
        ({"script_metadata": {**SCENE["script_metadata"], "title": None}}, "title"),
        ({"num_inference_steps": 10_000}, "inference steps"),
    ],
)
def test_bad_scenes_are_422_and_make_no_task(
    client: TestClient, ctx: IngressContext, change: dict[str, Any], needle: str
) -> None:
    body = refused(client, ctx, "/api/v1/images/generations/internal", {**SCENE, **change})
    assert body["error_code"] == "INVALID_INPUT" and needle in body["message"]


def test_a_scene_as_jackson_sends_it_is_the_same_scene(client: TestClient) -> None:
    """Unknown fields (at every level) are ignored and null is a field left out, so a Spring/Jackson
    client's body makes the very scene the plain body makes."""
    plain = posted(client, "/api/v1/images/generations/internal", scene_body(8)).json()
    lenient = posted(client, "/api/v1/images/generations/internal", jackson_scene(8)).json()
    assert lenient["image_prompt"] == plain["image_prompt"] and lenient["scene_id"] == plain["scene_id"]
    assert lenient["task_id"] != plain["task_id"]
    scene = wait_result(client, lenient["task_id"])
    assert scene["status"] == "done" and scene["seed"] == wait_result(client, plain["task_id"])["seed"]


def test_a_v1_route_stays_strict(client: TestClient, ctx: IngressContext) -> None:
    body = refused(client, ctx, "/v1/textures", {**TEXTURES, "unknown_field": 1})
    assert body["error_code"] == "INVALID_INPUT" and "unknown_field" in body["message"]
    assert "extra" in refused(client, ctx, "/v1/generate", {"prompt": "desk", "extra": 1})["message"]


# -- articles ----------------------------------------------------------------------------------------


ARTICLE = {
    "placeholders": [
        {"index": 3, "alt": "[이미지 설명: 미래적인 AI 로봇]"},
        {"index": 1, "alt": "쿼카"},  # no glossary word: this one cannot get an English prompt offline
        {"index": 2, "alt": "햇살이 드는 아늑한 카페"},
    ]
}


def test_article_placeholders_come_back_in_order_each_on_its_own(client: TestClient, stages: PaintingStages) -> None:
    response = posted(client, "/v1/articles/images", ARTICLE, 202)
    result = wait_result(client, response.json()["task_id"])
    assert result["status"] == "done"
    entries = result["placeholders"]
    assert [entry["index"] for entry in entries] == [3, 1, 2]
    assert entries[1]["error_code"] == "PROMPT_UNTRANSLATABLE" and "쿼카" in entries[1]["message"]
    for entry in (entries[0], entries[2]):
        assert entry["url"] and entry["backend"] == "local" and not has_hangul(entry["prompt"])
    assert "futuristic AI robot" in entries[0]["prompt"]
    assert result["failed_placeholders"] == 1
    assert len(stages.specs) == 2 and len({spec.seed for spec in stages.specs}) == 2


@pytest.mark.parametrize("writer", ["translator"], indirect=True)
def test_a_placeholder_outside_the_glossary_gets_its_english_from_the_translator(
    client: TestClient, stages: PaintingStages
) -> None:
    result = wait_result(client, posted(client, "/v1/articles/images", ARTICLE, 202).json()["task_id"])
    entries = result["placeholders"]
    assert result["status"] == "done" and result["failed_placeholders"] == 0
    quokka = entries[1]
    assert quokka["url"] and quokka["writer"] == "translator:tiny" and quokka["machine_translated"] is True
    assert not has_hangul(quokka["prompt"]) and "untranslated" not in quokka
    assert "machine_translated" not in entries[0] and "timings" not in entries[0]  # the glossary knew its words
    # each machine-translated placeholder's own seconds; the task's timings.translate is their sum
    spent = [entry["timings"]["translate"] for entry in entries if entry.get("machine_translated")]
    assert quokka["timings"]["translate"] > 0 and result["timings"]["translate"] == pytest.approx(sum(spent), abs=1e-3)
    assert len(stages.specs) == 3


def test_an_article_as_jackson_sends_it_keeps_each_tag(client: TestClient) -> None:
    body = posted(client, "/v1/articles/images", jackson_article(), headers={"Prefer": "wait=10"}).json()
    entries = body["placeholders"]
    assert [(p["index"], p.get("tag")) for p in entries] == [(0, "hero"), (1, None)]
    assert all(p["url"] for p in entries) and "position" not in entries[0] and "articleId" not in body
    assert wait_result(client, body["task_id"])["placeholders"][0]["tag"] == "hero"


def test_article_wait_answers_the_placeholders(client: TestClient) -> None:
    response = posted(client, "/v1/articles/images", ARTICLE, headers={"Prefer": "wait=10"})
    body = response.json()
    assert [p["index"] for p in body["placeholders"]] == [3, 1, 2]
    assert body["failed_placeholders"] == 1 and body["task_id"] == response.headers["x-task-id"]


def test_a_placeholder_the_generator_fails_goes_to_the_next_backend(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry
) -> None:
    stages.fail_with = RuntimeError("out of memory")
    body = client.post("/v1/articles/images", json=ARTICLE, headers={"Prefer": "wait=10"}).json()
    made = [p for p in body["placeholders"] if p.get("url")]
    assert len(made) == 2 and {p["backend"] for p in made} == {"huggingface"}
    assert made[0]["backends_failed"][0]["backend"] == "local"


def test_no_placeholder_made_fails_the_task_but_keeps_each_reason(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry
) -> None:
    break_backends(stages, registry)
    response = client.post("/v1/articles/images", json=ARTICLE)
    result = wait_result(client, response.json()["task_id"])
    assert result["status"] == "failed" and result["error_code"] == "GENERATION_FAILED"
    assert [p["error_code"] for p in result["placeholders"]] == [
        "GENERATION_FAILED",
        "PROMPT_UNTRANSLATABLE",
        "GENERATION_FAILED",
    ]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"placeholders": []}, "placeholders"),
        ({"placeholders": [{"index": 1, "alt": "a"}, {"index": 1, "alt": "b"}]}, "each index"),
        ({"placeholders": [{"index": i, "alt": "a"} for i in range(17)]}, "at most 16"),
        ({"placeholders": [{"index": 0, "alt": " "}]}, "alt"),
        ({"placeholders": [{"index": -1, "alt": "a"}]}, "index"),
        ({"placeholders": [{"index": 0, "alt": "a", "tag": "x" * 201}]}, "tag"),
        ({"placeholders": [{"index": 0, "alt": None}]}, "alt"),
    ],
)
def test_bad_articles_are_422_and_make_no_task(
    client: TestClient, ctx: IngressContext, body: dict[str, Any], needle: str
) -> None:
    assert needle in refused(client, ctx, "/v1/articles/images", body)["message"]


# -- Korean prompts reach the text encoder in English --------------------------------------------------


def test_a_korean_prompt_is_translated_before_generation(client: TestClient, stages: PaintingStages) -> None:
    response = posted(client, "/v1/images/generations", {"prompt": "아늑한 나무 책상, 따뜻한 햇살"})
    assert not has_hangul(stages.specs[-1].prompt)
    assert "cozy wood desk, warm sunlight" in stages.specs[-1].prompt
    result = wait_result(client, response.headers["x-task-id"])
    assert result["translations"]["prompt"] == {
        "source": "아늑한 나무 책상, 따뜻한 햇살",
        "english": "cozy wood desk, warm sunlight",
        "writer": "template",
    }


# -- textures ----------------------------------------------------------------------------------------

TEXTURES = {
    "textures": [
        {"product_type": "Down Jacket", "material": "Nylon", "colour": "navy blue", "pattern": "quilted"},
        {"product_type": "소파", "material": "벨벳", "colour": "베이지"},
    ]
}


@pytest.mark.parametrize("writer", ["translator"], indirect=True)
def test_a_texture_word_outside_the_glossary_is_machine_translated_in_the_flow(
    client: TestClient, stages: PaintingStages
) -> None:
    body = {"textures": [{"product_type": "소파", "material": "벨벳", "colour": "쿼카색"}]}
    made = posted(client, "/v1/textures", body).json()["textures"][0]
    assert made["url"] and made["machine_translated"] is True and made["timings"]["translate"] >= 0
    assert "untranslated" not in made and not has_hangul(made["prompt"])
    assert stages.specs[-1].prompt == made["prompt"] and "plush velvet" in made["prompt"]


def test_textures_are_made_then_answered_from_the_cache_without_generating(
    client: TestClient, stages: PaintingStages
) -> None:
    first = posted(client, "/v1/textures", TEXTURES)
    body = first.json()
    assert body["cache_hits"] == 0 and body["task_id"]
    made = body["textures"]
    assert [t["cache_hit"] for t in made] == [False, False] and all(t["url"] for t in made)
    assert made[0]["prompt"].startswith(
        "extreme close-up macro photograph of navy blue water-resistant nylon, quilted pattern, "
        "technical fabric outer garment material"
    )
    assert "plush velvet" in made[1]["prompt"] and "upholstery" in made[1]["prompt"] and "beige" in made[1]["prompt"]
    assert len(stages.specs) == 2 and stages.specs[0].negative_prompt.startswith("blurry, low quality, people")

    # The same parameters, however they are typed: answered at once, nothing generated, same images.
    again = {"textures": [{**TEXTURES["textures"][0], "product_type": "down  jacket", "colour": "Navy Blue"}]}
    hit = client.post("/v1/textures", json=again)
    assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
    assert hit.json().get("task_id") is None and hit.json()["cache_hits"] == 1
    assert hit.json()["textures"][0]["cache_hit"] is True and hit.json()["textures"][0]["url"] == made[0]["url"]
    assert len(stages.specs) == 2


def test_a_partly_cached_request_generates_only_the_missing_textures(
    client: TestClient, stages: PaintingStages
) -> None:
    client.post("/v1/textures", json={"textures": TEXTURES["textures"][:1]})
    body = client.post("/v1/textures", json=TEXTURES).json()
    assert [t["cache_hit"] for t in body["textures"]] == [True, False] and body["cache_hits"] == 1
    assert len(stages.specs) == 2  # one per distinct texture, ever


def test_other_settings_or_callers_do_not_share_cache_entries(client: TestClient, stages: PaintingStages) -> None:
    one = {"textures": TEXTURES["textures"][:1]}
    client.post("/v1/textures", json=one)
    for variant in ({"tileable": True}, {"seed": 5}, {"num_inference_steps": 3}, {"user_id": "someone-else"}):
        assert client.post("/v1/textures", json={**one, **variant}).json()["cache_hits"] == 0, variant
    assert len(stages.specs) == 5


def test_tileable_textures_ask_the_generator_for_a_seamless_tile(client: TestClient, stages: PaintingStages) -> None:
    body = client.post("/v1/textures", json={**TEXTURES, "tileable": True}).json()
    assert all(spec.tileable for spec in stages.specs)
    assert all("seamless tileable texture" in t["prompt"] for t in body["textures"])


def test_a_texture_every_backend_fails_is_reported_alone_and_not_cached(
    client: TestClient, stages: PaintingStages, registry: BackendRegistry
) -> None:
    break_backends(stages, registry)
    response = client.post("/v1/textures", json=TEXTURES)
    assert response.status_code == 500 and response.json()["error_code"] == "GENERATION_FAILED"
    break_backends(stages, registry, broken=False)
    assert client.post("/v1/textures", json=TEXTURES).json()["cache_hits"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"textures": []}, "textures"),
        ({"textures": [{"product_type": "bag", "material": "nylon"}]}, "colour"),
        ({"textures": [{"product_type": " ", "material": "nylon", "colour": "red"}]}, "product_type"),
        ({"textures": [{"product_type": "bag", "material": "nylon", "colour": "red"}] * 9}, "at most 8"),
        ({**TEXTURES, "height": 65}, "multiple of 8"),
    ],
)
def test_bad_textures_are_422_and_make_no_task(
    client: TestClient, ctx: IngressContext, body: dict[str, Any], needle: str
) -> None:
    assert needle in refused(client, ctx, "/v1/textures", body)["message"]


# -- A/B between backends -----------------------------------------------------------------------------

EXPERIMENT = [
    {"name": "generator", "percent": 50, "chain": ["local"]},
    {"name": "cloud", "percent": 50, "chain": ["huggingface"]},
]


def _users_in_each_arm(ctx: IngressContext) -> dict[str, str]:
    """A user id in each variant of the article experiment."""
    found: dict[str, str] = {}
    for i in range(100):
        variant = ctx.args.backends.variant_for("article", f"user:u{i}")
        assert variant is not None
        found.setdefault(variant.name, f"u{i}")
    return found


def test_an_ab_test_splits_callers_stickily_and_records_the_variant(
    client: TestClient, ctx: IngressContext, registry: BackendRegistry
) -> None:
    experiments = {"article": [Variant.model_validate(v) for v in EXPERIMENT]}
    ctx.args.backends.experiments.update(experiments)
    try:
        users = _users_in_each_arm(ctx)
        assert set(users) == {"generator", "cloud"}
        body = {"placeholders": [{"index": 0, "alt": "a robot"}]}
        for arm, user in users.items():
            for _ in range(2):  # the same caller lands in the same arm every time
                done = client.post("/v1/articles/images", json={**body, "user_id": user}, headers={"Prefer": "wait=10"})
                task = wait_result(client, done.json()["task_id"])
                assert task["variant"] == arm
                assert task["placeholders"][0]["backend"] == {"generator": "local", "cloud": "huggingface"}[arm]
    finally:
        ctx.args.backends.experiments.clear()


def test_variants_split_by_their_percents() -> None:
    from serve_app.backends.config import BackendsConfig

    cfg = BackendsConfig.model_validate(
        {
            "experiments": {
                "texture": [
                    {"name": "a", "percent": 20, "chain": ["local"]},
                    {"name": "b", "percent": 80, "chain": ["local"]},
                ]
            }
        }
    )
    arms = [cfg.variant_for("texture", f"user:{i}").name for i in range(2000)]  # type: ignore[union-attr]
    assert 0.17 < arms.count("a") / len(arms) < 0.23
    assert cfg.variant_for("scene_internal", "user:1") is None


@pytest.mark.parametrize(
    ("variants", "needle"),
    [
        ([{"name": "a", "percent": 60, "chain": ["local"]}], "summing to 100"),
        (
            [{"name": "a", "percent": 50, "chain": ["local"]}, {"name": "a", "percent": 50, "chain": ["local"]}],
            "distinct",
        ),
        ([{"name": "a", "percent": 100, "chain": ["nope"]}], "unknown backends"),
    ],
)
def test_bad_experiments_are_refused_at_load(variants: list[dict[str, Any]], needle: str) -> None:
    from pydantic import ValidationError

    from serve_app.backends.config import BackendsConfig

    with pytest.raises(ValidationError, match=needle):
        BackendsConfig.model_validate({"experiments": {"article": variants}})


# -- body size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/textures", "/v1/articles/images", "/api/v1/images/generations/internal"])
def test_an_oversized_json_body_is_413_before_it_is_buffered(
    client: TestClient, ctx: IngressContext, route: str
) -> None:
    huge = b'{"textures": [' + b" " * (2 * 1024 * 1024) + b"]}"
    declared = client.post(route, content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error_code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 65536

    streamed = client.post(route, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error_code"] == "PAYLOAD_TOO_LARGE"
    assert ctx.tasks.db.read("SELECT task_id FROM tasks") == []


@pytest.mark.parametrize(
    ("route", "status", "code"),
    [
        ("/v1/textures", 422, "INVALID_INPUT"),
        ("/v1/articles/images", 422, "INVALID_INPUT"),
        ("/api/v1/images/generations/external", 422, "INVALID_INPUT"),
        ("/v1/images/generations", 400, "INVALID_INPUT"),
    ],
)
def test_a_body_that_is_not_utf8_is_the_routes_invalid_input_answer(
    client: TestClient, ctx: IngressContext, route: str, status: int, code: str
) -> None:
    answer = client.post(route, content=b"\xa3~\xdf\x85\xeaV", headers={"Content-Type": "application/json"})
    body = answer.json()
    assert answer.status_code == status, body
    assert (body.get("error_code") or body["error"]["code"]) == code
    assert ctx.tasks.db.read("SELECT task_id FROM tasks") == []


@pytest.mark.parametrize(
    "route",
    [
        "/v1/textures",
        "/v1/articles/images",
        "/api/v1/images/generations/external",
        "/api/v1/images/generations/internal",
    ],
)
def test_every_waiting_route_documents_its_202_and_bad_body_answers(client: TestClient, route: str) -> None:
    app.openapi_schema = None
    responses = client.get("/openapi.json").json()["paths"][route]["post"]["responses"]
    assert {"200", "202", "413", "422", "429", "503"} <= set(responses), sorted(responses)


# -- what the OpenAPI document states is what the server checks ---------------------------------------


def _validator(document: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator of one component of the OpenAPI document (its $refs resolved in it)."""
    root = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_the_document_states_that_a_dialogue_needs_its_character(client: TestClient, ctx: IngressContext) -> None:
    app.openapi_schema = None
    document = client.get("/openapi.json").json()
    scene = _validator(document, "SceneRequest")
    speaker = {"type": "dialogue", "character": "민지", "text": "안녕"}
    assert scene.is_valid(SCENE) and scene.is_valid({**SCENE, "audios": [speaker, {"type": "narration", "text": "비"}]})
    for voiceless in ({"type": "dialogue", "text": "안녕"}, {"type": "dialogue", "character": None, "text": "안녕"}):
        body = {**SCENE, "audios": [voiceless]}
        assert not scene.is_valid(body), "the schema refuses it (if/then) ..."
        assert "needs its character" in refused(client, ctx, "/api/v1/images/generations/internal", body)["message"]
    responses = document["paths"]["/api/v1/images/generations/internal"]["post"]["responses"]
    assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "without its character" in responses["422"]["description"]


def test_the_document_says_placeholder_indexes_are_distinct_and_its_422_is_the_servers(
    client: TestClient, ctx: IngressContext
) -> None:
    app.openapi_schema = None
    document = client.get("/openapi.json").json()
    field = document["components"]["schemas"]["ArticleImagesRequest"]["properties"]["placeholders"]
    assert "same `index`" in field["description"] and "DUPLICATE_INDEX" in field["description"], "in words"
    twice = {"placeholders": [{"index": 1, "alt": "a"}, {"index": 1, "alt": "b"}]}
    assert _validator(document, "ArticleImagesRequest").is_valid(twice), "JSON Schema cannot state it"
    answer = refused(client, ctx, "/v1/articles/images", twice)
    documented = document["paths"]["/v1/articles/images"]["post"]["responses"]["422"]
    assert answer["error_code"] == "DUPLICATE_INDEX" and "DUPLICATE_INDEX" in documented["description"]
    error_shape = documented["content"]["application/json"]["schema"]
    assert _validator(document, error_shape["$ref"].rsplit("/", 1)[1]).is_valid(answer)


@pytest.mark.parametrize(
    ("component", "lenient"),
    [
        ("SceneRequest", True),
        ("ScriptMetadata", True),
        ("Character", True),
        ("Audio", True),
        ("ArticleImagesRequest", True),
        ("Placeholder", True),
        ("SeedLoraSelection", True),
        ("SeedGenerateRequest", True),
        ("GenerateRequest", False),
        ("LoraSelection", False),
        ("TexturesRequest", False),
        ("ImageGenerationRequest", False),
    ],
)
def test_the_document_says_which_bodies_are_lenient(client: TestClient, component: str, lenient: bool) -> None:
    app.openapi_schema = None
    schema = client.get("/openapi.json").json()["components"]["schemas"][component]
    assert schema.get("additionalProperties", False) is lenient
    assert ("Read leniently" in schema.get("description", "")) is lenient


def test_the_document_accepts_the_bodies_jackson_sends(client: TestClient) -> None:
    app.openapi_schema = None
    document = client.get("/openapi.json").json()
    assert _validator(document, "SceneRequest").is_valid(jackson_scene(1))
    assert _validator(document, "ArticleImagesRequest").is_valid(jackson_article())
    assert not _validator(document, "SceneRequest").is_valid({**SCENE, "scene_id": None}), "a required field"


# -- the shipped texture chain: FLUX.1-dev first, the Generator without a token -----------------------


def test_the_shipped_texture_chain_starts_with_flux_and_falls_back_to_the_generator(
    tmp_path: Path, stages: PaintingStages, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in variable_names("HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    chains = load_serve_config()["applications"][0]["args"]["backends"]["chains"]
    assert chains["texture"] == ["huggingface:black-forest-labs/FLUX.1-dev", "local"]
    assert BackendsConfig().chains["texture"] == chains["texture"], "the other profiles' default chain too"
    with ingress_context(tmp_path, {"max_active": 8}, backends={"chains": chains}) as context:
        registry = BackendRegistry(context.args.backends, "painter")  # the real Hugging Face client, no token
        deps = FlowDeps(stages, context.images, backends=registry, task_store=context.tasks)  # type: ignore[arg-type]
        context.runner = WorkerRunner(context, {"texture": TextureFlow(deps, cache=context.tasks)})  # type: ignore[assignment]
        with TestClient(app) as client:
            made = posted(client, "/v1/textures", {**TEXTURES, "seed": 1}).json()["textures"]
            assert [t["backend"] for t in made] == ["local", "local"]
            failed = made[0]["backends_failed"][0]
            assert failed["backend"] == "huggingface" and failed["error_code"] == "BACKEND_NOT_CONFIGURED"
            monkeypatch.setenv("HUGGINGFACE_TOKEN", "hf_unused")  # a token, but FLUX cannot tile: no request
            tile = posted(client, "/v1/textures", {**TEXTURES, "seed": 2, "tileable": True}).json()["textures"]
            assert tile[0]["backend"] == "local"
            assert tile[0]["backends_failed"][0]["error_code"] == "TILING_NOT_SUPPORTED"
