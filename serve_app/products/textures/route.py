"""Texture images (source spec texture-generator-upgrade.md): `POST /v1/textures`.

Each texture (product type, material, colour, optional pattern and finish) is resolved here into
its prompt (prompts.yaml beside this module), its seed (derived from the parameters unless given) and its
content hash, and looked up in the content-addressed cache. When the cache has every texture, the
answer comes at once, each marked `cache_hit: true`, and nothing is generated. Otherwise the
request becomes a task of kind `texture` that makes the missing ones (batched through the
Generator, or the `texture` chain's cloud backend, FLUX through Hugging Face by default) and the
route waits for it at most `textures.max_wait_s` (`Prefer: respond-async` / `wait=N`, 504 past
the wait, as serve_app.api.waiting says).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.intake import SubmissionDep, answered, given, patch_settings, waiting_route_errors
from serve_app.api.slots import LONG
from serve_app.backends import BackendRegistry
from serve_app.errors import InvalidInput
from serve_app.products.base import SchemaContext
from serve_app.products.textures.config import TexturesConfig
from serve_app.products.textures.flow import KIND, cached_entry
from serve_app.products.textures.payload import Texture, TextureItem, TexturePayload
from serve_app.products.textures.prompts import content_hash, derived_seed, texture_prompt
from serve_app.requests import GenerateRequest, OptFloat, OptInt, ResolvedGenerate

router = APIRouter(prefix="/v1", tags=["Texture images"])

EXAMPLE = {
    "textures": [
        {"product_type": "down jacket", "material": "nylon", "colour": "navy blue", "pattern": "quilted"},
        {"product_type": "소파", "material": "벨벳", "colour": "베이지"},
    ],
    "tileable": True,
}


class TexturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    textures: list[Texture] = Field(min_length=1, description="One image each.")
    tileable: bool = Field(default=False, description="Seamless tiling (the image repeats without a seam).")
    seed: OptInt = Field(
        default=None, ge=0, lt=2**63, description="Texture i uses seed + i; by default a seed from its parameters."
    )
    num_inference_steps: OptInt = None
    guidance_scale: OptFloat = Field(default=None, allow_inf_nan=False)
    height: OptInt = None
    width: OptInt = None
    user_id: str | None = Field(default=None, max_length=64)
    webhook_url: str | None = Field(default=None, max_length=2048)


class TextureImage(BaseModel):
    model_config = ConfigDict(extra="allow")

    product_type: str
    material: str
    colour: str
    cache_hit: bool = Field(description="Answered from the cache: no generation ran for it.")
    url: str | None = None
    prompt: str | None = None
    backend: str | None = None
    error_code: str | None = None
    message: str | None = None


class TexturesResponse(BaseModel):
    task_id: str | None = Field(description="The task that made the missing textures; absent when all were cached.")
    textures: list[TextureImage] = Field(description="In the request's order.")
    cache_hits: int
    cost_usd: float


_ERRORS = waiting_route_errors(
    "Invalid textures or settings.",
    "No texture got an image (GENERATION_FAILED).",
    "textures.max_wait_s",
)


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    limits, max_textures = doc.limits, doc.config(TexturesConfig).max_textures
    schema = TexturesRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    props = schema["properties"]
    patch_settings(props, limits, webhooks=doc.webhooks)
    props["textures"]["maxItems"] = max_textures
    for field in ("guidance_scale",):
        props[field]["anyOf"][0].update(minimum=0, maximum=limits.max_guidance_scale)
    schema["description"] = (
        f"height x width x num_inference_steps x textures must be at most {limits.request_cost_limit()} "
        "(422 COST_TOO_HIGH)."
    )
    return {**nested, "TexturesRequest": schema}


def resolve_textures(
    ctx: IngressContext, caller: Caller, body: TexturesRequest, registry: BackendRegistry
) -> ResolvedGenerate:
    """Every texture's prompt, seed and content hash, with the preset's defaults checked."""
    count = len(body.textures)
    max_textures = ctx.config(TexturesConfig).max_textures
    if count > max_textures:
        raise InvalidInput(f"textures: at most {max_textures} per request, got {count}.")
    req = GenerateRequest(
        num_inference_steps=body.num_inference_steps,
        guidance_scale=body.guidance_scale,
        height=body.height,
        width=body.width,
        seed=0,
        **given(user_id=body.user_id, webhook_url=body.webhook_url),
    )
    resolved = req.resolve_settings(ctx.preset, ctx.limits, count=count, counted="textures")
    resolved = caller.own(resolved, body.user_id is not None)
    scope = caller.scope(resolved.user_id)
    variant = ctx.args.backends.variant_for("texture", scope)
    settings = {
        "steps": resolved.num_inference_steps,
        "guidance": resolved.guidance_scale,
        "size": [resolved.width, resolved.height],
        "tileable": body.tileable,
        "format": resolved.output_format,
        "chain": registry.models("texture", variant.chain if variant else None),
    }
    items = []
    for index, texture in enumerate(body.textures):
        written = texture_prompt(texture, tileable=body.tileable)
        seed = (body.seed + index) % 2**63 if body.seed is not None else derived_seed(texture)
        items.append(
            TextureItem(
                texture=texture,
                prompt=written.prompt,
                negative_prompt=written.negative_prompt,
                seed=seed,
                content_hash=content_hash(scope, texture, {**settings, "seed": seed}),
                untranslated=written.untranslated,
            )
        )
    payload = TexturePayload(items=items, tileable=body.tileable, variant=variant)
    return resolved.model_copy(update={"product": payload, "seed": items[0].seed})


async def _with_cache(ctx: IngressContext, resolved: ResolvedGenerate) -> ResolvedGenerate:
    """The textures the cache has, filled in (their URLs made fresh: presigned ones expire)."""
    payload = resolved.product
    assert isinstance(payload, TexturePayload)
    found = await asyncio.to_thread(ctx.tasks.cached_textures, [item.content_hash for item in payload.items])
    items = []
    for item in payload.items:
        entry = found.get(item.content_hash)
        if entry is not None and entry.get("key"):
            entry = {**entry, "url": ctx.images.url_for(entry["key"])}
        items.append(item.model_copy(update={"cached": entry}))
    return resolved.model_copy(update={"product": payload.model_copy(update={"items": items})})


@router.post(
    "/textures",
    dependencies=[LONG],
    **answered(TexturesResponse, _ERRORS),
    summary="Fabric texture images; identical parameters answer from the cache at once.",
)
async def textures(body: TexturesRequest, task: SubmissionDep) -> JSONResponse:
    ctx = task.ctx
    registry = BackendRegistry(ctx.args.backends, ctx.preset.generator.model_id)
    resolved = await _with_cache(ctx, resolve_textures(ctx, task.caller, body, registry))
    payload = resolved.product
    assert isinstance(payload, TexturePayload)
    if all(item.cached for item in payload.items):
        answer = TexturesResponse(
            task_id=None,
            textures=[TextureImage.model_validate(cached_entry(item)) for item in payload.items],
            cache_hits=len(payload.items),
            cost_usd=0.0,
        )
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers={"X-Cache": "hit"})
    record = await task.accept(KIND, body, resolved)
    waited = await task.wait(record, ctx.config(TexturesConfig).max_wait_s)
    if isinstance(waited, JSONResponse):
        return waited
    result = waited.result or {}
    answer = TexturesResponse(
        task_id=waited.task_id,
        textures=[TextureImage.model_validate(entry) for entry in result.get("textures", [])],
        cache_hits=result.get("cache_hits", 0),
        cost_usd=result.get("cost_usd", 0.0),
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers={"X-Task-Id": waited.task_id})
