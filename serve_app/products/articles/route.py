"""Article images (source spec image-generation-storage-guide.md): `POST /v1/articles/images`.

A list of placeholders `{index, alt, tag}` (alt text often Korean; the body read leniently, as a
Spring/Jackson client sends it: serve_app.lenient) becomes one durable task of kind
`article`: one image per placeholder through the `article` backend chain, batched through the
in-cluster Generator. The answer is 202 with the task id, like /v1/generate; `Prefer: wait=N`
waits up to N seconds (at most `scenes.max_wait_s`) and answers the finished placeholders. The
result lists the placeholders in the request's order, each with its `url` or its own
`error_code` and `message`, and its `tag` when it had one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.intake import TASK_ROUTE_ERRORS, SubmissionDep, given, patch_settings
from serve_app.api.schemas import ErrorResponse, TaskAccepted
from serve_app.api.slots import LONG
from serve_app.api.waiting import preferences
from serve_app.errors import InvalidInput
from serve_app.lenient import LENIENT, SeedBody, SeedLoraSelection
from serve_app.products.articles.config import ArticlesConfig
from serve_app.products.articles.flow import KIND
from serve_app.products.articles.payload import ArticlePayload, Placeholder
from serve_app.products.base import SchemaContext
from serve_app.products.scenes.config import ScenesConfig  # articles wait as long as scenes (scenes.max_wait_s)
from serve_app.requests import GenerateRequest, OptInt

router = APIRouter(prefix="/v1/articles", tags=["Article images"])

EXAMPLE = {
    "placeholders": [
        {"index": 0, "alt": "[이미지 설명: 미래적인 AI 로봇]", "tag": "hero"},
        {"index": 1, "alt": "햇살이 드는 아늑한 카페"},
    ],
    "style": "editorial illustration",
}


class ArticleImagesRequest(SeedBody):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    placeholders: list[Placeholder] = Field(
        min_length=1,
        description="One image each. No two placeholders may have the same `index` (422 DUPLICATE_INDEX "
        "otherwise; JSON Schema cannot state this rule).",
    )
    style: str | None = Field(default=None, max_length=300, description="Words added to every prompt.")
    lora: SeedLoraSelection | None = Field(default=None, description="A LoRA for every image (see GET /info).")
    seed: OptInt = Field(default=None, ge=0, lt=2**63, description="Placeholder i uses seed + i (random when omitted).")
    num_inference_steps: OptInt = None
    height: OptInt = None
    width: OptInt = None
    user_id: str | None = Field(default=None, max_length=64)
    webhook_url: str | None = Field(default=None, max_length=2048)


class ArticleImage(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    alt: str
    tag: str | None = Field(default=None, description="The placeholder's `tag`, when it had one.")
    url: str | None = Field(default=None, description="The image, when it was made.")
    prompt: str | None = None
    backend: str | None = None
    cost_usd: float | None = None
    error_code: str | None = Field(default=None, description="Why this placeholder has no image.")
    message: str | None = None


class ArticleImagesResponse(BaseModel):
    task_id: str
    placeholders: list[ArticleImage] = Field(description="In the request's order.")
    failed_placeholders: int
    cost_usd: float


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """ArticleImagesRequest's schema with this server's ranges and LoRAs; the rules JSON Schema
    cannot state (distinct indexes, the cost of all placeholders together) are in its description."""
    preset, limits, max_placeholders = doc.preset, doc.limits, doc.config(ArticlesConfig).max_placeholders
    schema = ArticleImagesRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    props = schema["properties"]
    patch_settings(props, limits, webhooks=doc.webhooks)
    props["placeholders"]["maxItems"] = max_placeholders
    lora_names = [spec.name for spec in preset.loras]
    if not lora_names:
        props["lora"] = {"type": "null", "description": "This preset has no LoRA adapters."}
    else:
        lora = {**nested["SeedLoraSelection"]}
        lora["properties"] = {**lora["properties"], "name": {**lora["properties"]["name"], "enum": lora_names}}
        nested = {**nested, "SeedLoraSelection": lora}
    schema["description"] = LENIENT + (
        "Placeholder indexes must be distinct (422 DUPLICATE_INDEX otherwise); height x width x num_inference_steps x "
        f"placeholders must be at most {limits.request_cost_limit()} (422 COST_TOO_HIGH)."
    )
    return {**nested, "ArticleImagesRequest": schema}


_ERRORS: dict[int | str, dict[str, Any]] = {
    **TASK_ROUTE_ERRORS,
    202: {"model": TaskAccepted, "description": "Accepted; poll GET /v1/result/{task_id}."},
    422: {
        "model": ErrorResponse,
        "description": "DUPLICATE_INDEX: two placeholders have the same index; INVALID_INPUT: other invalid "
        "placeholders (too many, blank alt) or settings; COST_TOO_HIGH.",
    },
    503: {"description": "Queue full; retry after Retry-After seconds."},
    504: {"description": "With Prefer: wait=N, not done in time: the task goes on (X-Task-Id)."},
}


@router.post(
    "/images",
    dependencies=[LONG],
    response_model=ArticleImagesResponse,  # the 200 of Prefer: wait=N; without it, 202 TaskAccepted
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="One image per article placeholder; 202 with a task id (or the result with Prefer: wait=N).",
)
async def article_images(body: ArticleImagesRequest, task: SubmissionDep) -> JSONResponse:
    ctx, caller = task.ctx, task.caller
    cfg = ctx.config(ArticlesConfig)
    count = len(body.placeholders)
    if count > cfg.max_placeholders:
        raise InvalidInput(f"placeholders: at most {cfg.max_placeholders} per request, got {count}.")
    indexes = [p.index for p in body.placeholders]
    if len(set(indexes)) != count:
        raise InvalidInput("placeholders: each index may appear once.", error_code="DUPLICATE_INDEX")
    req = GenerateRequest(
        num_inference_steps=body.num_inference_steps,
        height=body.height,
        width=body.width,
        seed=body.seed,
        lora=body.lora,
        **given(user_id=body.user_id, webhook_url=body.webhook_url),
    )
    resolved = req.resolve_settings(ctx.preset, ctx.limits, count=count, counted="placeholders")
    resolved = caller.own(resolved, body.user_id is not None)
    payload = ArticlePayload(
        placeholders=body.placeholders,
        style=body.style if body.style is not None else cfg.style,
        variant=ctx.args.backends.variant_for("article", caller.scope(resolved.user_id)),
    )
    record = await task.accept(KIND, body, resolved.model_copy(update={"product": payload}))
    headers = {"X-Task-Id": record.task_id, "Location": f"/v1/result/{record.task_id}"}
    _, wait = preferences(task.prefer)
    if wait is None:
        return JSONResponse(
            TaskAccepted(task_id=record.task_id, status=record.status).model_dump(mode="json"), 202, headers
        )
    waited = await task.wait(record, ctx.config(ScenesConfig).max_wait_s, prefer=f"wait={wait}")
    assert not isinstance(waited, JSONResponse)
    result = waited.result or {}
    answer = ArticleImagesResponse(
        task_id=waited.task_id,
        placeholders=[ArticleImage.model_validate(entry) for entry in result.get("placeholders", [])],
        failed_placeholders=result.get("failed_placeholders", 0),
        cost_usd=result.get("cost_usd", 0.0),
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), 200, headers)
