"""Scene images, on the source spec's paths (scene-image-service-readme.md):
`POST /api/v1/images/generations/external` (a cloud image API first: the `scene_external` chain,
KLING by default) and `POST /api/v1/images/generations/internal` (the in-cluster Generator: the
`scene_internal` chain).

The body is the source spec's (script metadata with characters, the scene id, its audios) and the answer
the source spec's `{scene_id, image_prompt, image_s3url}`, plus the task id and which backend made the
image at what cost. The work is a durable task of kind `scene`; the call waits for it at most
`scenes.max_wait_s` (the source spec's call is synchronous), with `Prefer: respond-async` / `wait=N` and
the 504 of serve_app.api.waiting past the wait.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.intake import Submission, SubmissionDep, answered, given, patch_settings, waiting_route_errors
from serve_app.api.schemas import ErrorResponse
from serve_app.api.slots import LONG
from serve_app.lenient import LENIENT
from serve_app.products.base import SchemaContext
from serve_app.products.scenes.config import ScenesConfig
from serve_app.products.scenes.flow import KIND
from serve_app.products.scenes.payload import Scene, ScenePayload
from serve_app.requests import GenerateRequest, LoraSelection, OptInt, ResolvedGenerate

router = APIRouter(prefix="/api/v1/images/generations", tags=["Scene images"])

EXAMPLE: dict[str, Any] = {
    "script_metadata": {
        "title": "비 오는 날의 카페",
        "script_id": 1,
        "characters": [
            {"name": "민지", "gender": 1, "description": "긴 머리의 여자 학생"},
            {"name": "준호", "gender": 0, "description": "안경을 쓴 남자"},
        ],
    },
    "scene_id": 1,
    "audios": [
        {"type": "narration", "text": "비 오는 저녁, 따뜻한 카페 창가"},
        {"type": "dialogue", "character": "민지", "text": "오랜만이야!", "emotion": "기쁨"},
    ],
}


class SceneRequest(Scene):
    """The source spec's body; the optional fields after it are this service's."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    user_id: str | None = Field(default=None, max_length=64, description="Whose images these are (storage keys).")
    webhook_url: str | None = Field(default=None, max_length=2048, description="POSTed the result when done.")
    num_inference_steps: OptInt = Field(default=None, description="In-cluster Generator steps (preset default).")
    height: OptInt = Field(default=None, description="Output height, a multiple of 8 (preset default).")
    width: OptInt = Field(default=None, description="Output width, a multiple of 8 (preset default).")


class SceneResponse(BaseModel):
    scene_id: int
    image_prompt: str = Field(description="The English prompt the image was made from.")
    image_s3url: str = Field(description="Where the image is (an S3 URL with S3 storage, else this server's).")
    task_id: str
    backend: str = Field(description="Which backend made it: local, kling, openai, ...")
    cost_usd: float = Field(description="The provider's price, or GPU-seconds x the configured price.")
    backend_seconds: float = Field(description="How long the backend took.")
    backends_failed: list[dict[str, str]] | None = Field(
        default=None, description="Backends of the chain tried before, and why they failed."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scene_id": 1,
                    "image_prompt": "a cinematic film still, a woman (long hair woman student), rain falling evening",
                    "image_s3url": "https://bucket.s3.amazonaws.com/anonymous/20261122/3f2a….png",
                    "task_id": "5b0c…",
                    "backend": "kling",
                    "cost_usd": 0.0035,
                    "backend_seconds": 12.4,
                }
            ]
        }
    )


_ERRORS = waiting_route_errors(
    "Invalid scene (unknown speaker, empty audios, bad settings).",
    "Every backend of the chain failed (GENERATION_FAILED), or the upload (S3_UPLOAD_FAILED).",
    "scenes.max_wait_s",
)
_ERRORS[422] = {
    "model": ErrorResponse,
    "description": "INVALID_INPUT: an invalid scene (a dialogue audio without its character, a speaker not in "
    "script_metadata.characters, no audios, bad settings); COST_TOO_HIGH.",
}


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """SceneRequest's schema with this server's ranges; a rule JSON Schema cannot state (a
    dialogue's character is one of the script's characters) is in its description."""
    limits = doc.limits
    schema = SceneRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    patch_settings(schema["properties"], limits, webhooks=doc.webhooks)
    schema["description"] = LENIENT + (
        # "the seed" here is the source spec: this text is in the OpenAPI document, kept as published
        "The seed's scene. Every dialogue audio names its character, one of script_metadata.characters "
        "(422 otherwise). height x width x num_inference_steps must be at most "
        f"{limits.request_cost_limit()} (422 COST_TOO_HIGH)."
    )
    return {**nested, "SceneRequest": schema}


def resolve_scene(
    ctx: IngressContext, caller: Caller, body: SceneRequest, chain: Literal["scene_internal", "scene_external"]
) -> ResolvedGenerate:
    """The scene as a task's settings: the preset's defaults checked as /v1/generate checks them,
    the style LoRA of `scenes.lora`, and the seed of the script."""
    lora = ctx.config(ScenesConfig).lora
    req = GenerateRequest(
        num_inference_steps=body.num_inference_steps,
        height=body.height,
        width=body.width,
        seed=body.style_seed,
        lora=LoraSelection(name=lora) if lora else None,
        **given(user_id=body.user_id, webhook_url=body.webhook_url),
    )
    resolved = caller.own(req.resolve_settings(ctx.preset, ctx.limits), body.user_id is not None)
    scene = Scene.model_validate(body.model_dump(include=set(Scene.model_fields)))
    variant = ctx.args.backends.variant_for(chain, caller.scope(resolved.user_id))
    return resolved.model_copy(update={"product": ScenePayload(scene=scene, chain=chain, variant=variant)})


async def _scene(
    task: Submission, body: SceneRequest, chain: Literal["scene_internal", "scene_external"]
) -> JSONResponse:
    resolved = resolve_scene(task.ctx, task.caller, body, chain)
    fingerprinted = body.model_copy(update={"user_id": resolved.user_id})
    record = await task.accept(KIND, _Fingerprint(chain=chain, body=fingerprinted), resolved)
    waited = await task.wait(record, task.ctx.config(ScenesConfig).max_wait_s)
    if isinstance(waited, JSONResponse):
        return waited
    result = waited.result or {}
    answer = SceneResponse(
        scene_id=body.scene_id,
        image_prompt=result["image_prompt"],
        image_s3url=result["image_s3url"],
        task_id=waited.task_id,
        backend=result["backend"],
        cost_usd=result["cost_usd"],
        backend_seconds=result["backend_seconds"],
        backends_failed=result.get("backends_failed"),
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers={"X-Task-Id": waited.task_id})


class _Fingerprint(BaseModel):
    """What makes two scene requests the same (for Idempotency-Key): the chain and the body."""

    chain: str
    body: SceneRequest


@router.post(
    "/external",
    dependencies=[LONG],
    **answered(SceneResponse, _ERRORS),
    summary="Scene image from a cloud image API first (the scene_external chain); answers when it is done.",
)
async def external(body: SceneRequest, task: SubmissionDep) -> JSONResponse:
    return await _scene(task, body, "scene_external")


@router.post(
    "/internal",
    dependencies=[LONG],
    **answered(SceneResponse, _ERRORS),
    summary="Scene image from the in-cluster Generator (the scene_internal chain); answers when it is done.",
)
async def internal(body: SceneRequest, task: SubmissionDep) -> JSONResponse:
    return await _scene(task, body, "scene_internal")
