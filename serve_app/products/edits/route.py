"""Instruction edits (source spec enhancement-api-options.md): `POST /v1/edits`.

A multipart form: the image in the file part `image` and an `instruction` ("make the lighting
warmer", "조명을 따뜻하게"). The request becomes a task of kind `edit` (serve_app.edit_flow): the
instruction in English (or rewritten by the prompt writer with `rewrite=true`), then the `edit`
backend chain: the in-cluster Editor (InstructPix2Pix) first and a cloud edit API on failure, as
configured; `backend=local` or `backend=cloud` asks for one side only. The route waits for the
task at most `edits.max_wait_s` (`Prefer: respond-async` / `wait=N`, 504 past the wait, as
serve_app.api.waiting says). The output keeps the image's aspect ratio at the preset's default
area unless `width` and `height` are given.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.errors import validation_error
from serve_app.api.intake import (
    SubmissionDep,
    answered,
    auto_size,
    image_form,
    image_request,
    non_null,
    patch_settings,
    waiting_route_errors,
)
from serve_app.api.slots import LONG
from serve_app.backends.config import chain_entry
from serve_app.errors import InvalidInput
from serve_app.patterns import NON_BLANK_PATTERN
from serve_app.products.base import SchemaContext
from serve_app.products.edits.config import EditsConfig
from serve_app.products.edits.flow import KIND
from serve_app.products.edits.payload import EditPayload
from serve_app.requests import GenerateRequest, OptFloat, OptInt, OutputFormat, ResolvedGenerate

router = APIRouter(prefix="/v1", tags=["Instruction edits"])


EXAMPLE = {"image": "desk.jpg", "instruction": "조명을 따뜻하게", "image_guidance_scale": 1.5, "backend": "auto"}


class EditForm(BaseModel):
    """The form fields of POST /v1/edits (the image comes as the file part `image`)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(
        min_length=1,
        pattern=NON_BLANK_PATTERN,
        description="What to change, Korean or English: 'make the lighting warmer'.",
    )
    image_guidance_scale: OptFloat = Field(
        default=None,
        allow_inf_nan=False,
        description="How closely to keep the image, 1-5 (edits.image_guidance_scale).",
    )
    guidance_scale: OptFloat = Field(
        default=None, allow_inf_nan=False, description="How closely to follow the instruction."
    )
    num_inference_steps: OptInt = None
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    seed: OptInt = Field(default=None, ge=0, lt=2**63)
    height: OptInt = Field(default=None, description="Output height; with width. Default: the image's aspect ratio.")
    width: OptInt = None
    rewrite: bool | None = Field(
        default=None, description="Rewrite the instruction into an English edit prompt first (edits.analysis)."
    )
    restore_faces: bool | None = Field(
        default=None, description="Restore faces after the edit (GFPGAN through Replicate, when configured)."
    )
    backend: Literal["auto", "local", "cloud"] = Field(
        default="auto",
        description="auto: the edit chain (local first, cloud on failure, as configured); local: the in-cluster "
        "Editor only; cloud: the chain's cloud backends only.",
    )
    output_format: OutputFormat | None = None
    user_id: str | None = Field(default=None, max_length=64)
    webhook_url: str | None = Field(default=None, max_length=2048)


class EditResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    task_id: str
    url: str = Field(description="The edited image.")
    instruction: str
    edit_prompt: str = Field(description="What the edit model was given (English).")
    backend: str = Field(description="Which backend made the edit: local (the Editor), openai, replicate.")
    backend_model: str | None = None
    cost_usd: float | None = None
    seed: int | None = None
    width: int
    height: int
    backends_failed: list[dict[str, Any]] | None = Field(default=None, description="Backends tried before it.")
    variant: str | None = Field(default=None, description="The A/B arm, when an experiment runs on edits.")
    face_restoration: dict[str, Any] | None = Field(
        default=None, description="With restore_faces: restored (true/false), by whom, or why not."
    )
    analysis: dict[str, Any] | None = Field(
        default=None,
        description="With rewrite and Gemini configured: its analysis of the image and the instruction: edits "
        "(what to change), preserve (what to keep), improved_prompt (the edit_prompt), model, seconds.",
    )
    analysis_fallback: str | None = Field(
        default=None, description="Why the analysis was not used (the text-only rewrite wrote the prompt)."
    )


_ERRORS = waiting_route_errors(
    "Invalid image, instruction or settings (INVALID_INPUT, INVALID_IMAGE, COST_TOO_HIGH).",
    "No backend of the chain could make the edit (GENERATION_FAILED, with each one's reason).",
    "edits.max_wait_s",
)

_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/EditRequest"}}},
}


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """The multipart form with this server's ranges; no field is null (a form leaves one out)."""
    limits = doc.limits
    schema = EditForm.model_json_schema(ref_template="#/components/schemas/{model}")
    props = schema["properties"]
    patch_settings(props, limits, webhooks=doc.webhooks)
    props["instruction"].update(minLength=1, maxLength=limits.max_prompt_chars, pattern=NON_BLANK_PATTERN)
    non_null(props["negative_prompt"]).update(maxLength=limits.max_prompt_chars)
    non_null(props["guidance_scale"]).update(minimum=0, maximum=limits.max_guidance_scale)
    non_null(props["image_guidance_scale"]).update(minimum=1, maximum=5)
    return {
        "EditRequest": image_form(
            "EditRequest",
            props,
            ["image", "instruction"],
            "height and width come together (multiples of 8 within the preset's limits); height x width x "
            f"num_inference_steps must be at most {limits.request_cost_limit()} (COST_TOO_HIGH).",
            examples=[EXAMPLE],
        )
    }


def _chain(ctx: IngressContext, backend: str) -> list[str] | None:
    """The backends a `backend` choice leaves of the edit chain (None: the chain, or the caller's A/B arm)."""
    if backend == "auto":
        return None
    chain = ctx.args.backends.chains["edit"]
    kept = [entry for entry in chain if (chain_entry(entry)[0] == "local") == (backend == "local")]
    if backend == "local" and not kept:
        kept = ["local"]  # the Editor always exists, in or out of the configured chain
    if not kept:
        raise InvalidInput(f"backend: no cloud edit backend is configured (the edit chain is {chain}).")
    return kept


#: The form fields that are /v1/generate's settings too, validated the same way.
_SHARED_SETTINGS = {
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "output_format",
    "user_id",
    "webhook_url",
}


def resolve_edit(ctx: IngressContext, caller: Caller, form: EditForm, image_size: tuple[int, int]) -> ResolvedGenerate:
    if (form.width is None) != (form.height is None):
        raise InvalidInput("width and height: give both, or neither (the image's aspect ratio).")
    width, height = (form.width, form.height) if form.width and form.height else auto_size(image_size, ctx)
    try:
        shared = form.model_dump(include=_SHARED_SETTINGS, exclude_none=True)
        req = GenerateRequest.model_validate({**shared, "prompt": form.instruction, "height": height, "width": width})
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc
    # Not an img2img (no strength): InstructPix2Pix runs every step on the image's latents.
    cfg = ctx.config(EditsConfig)
    resolved = caller.own(req.resolve(ctx.preset, ctx.limits), form.user_id is not None)
    image_guidance = form.image_guidance_scale
    if image_guidance is None:
        image_guidance = cfg.image_guidance_scale
    elif not 1.0 <= image_guidance <= 5.0:
        raise InvalidInput("image_guidance_scale: between 1 and 5.")
    if form.restore_faces and cfg.face_restoration.provider == "off":
        raise InvalidInput("restore_faces: face restoration is off on this server (edits.face_restoration).")
    chain = _chain(ctx, form.backend)
    payload = EditPayload(
        instruction=form.instruction,
        image_guidance_scale=image_guidance,
        rewrite=cfg.rewrite if form.rewrite is None else form.rewrite,
        restore_faces=bool(form.restore_faces),
        chain=chain,
        variant=None if chain else ctx.args.backends.variant_for("edit", caller.scope(resolved.user_id)),
    )
    return resolved.model_copy(update={"product": payload})


@router.post(
    "/edits",
    dependencies=[LONG],
    **answered(EditResponse, _ERRORS),
    summary="Edit an image by an instruction (InstructPix2Pix, or a cloud edit API); answers when it is done.",
    openapi_extra={"requestBody": _BODY},
)
async def edits(request: Request, task: SubmissionDep) -> JSONResponse:
    ctx = task.ctx
    with ctx.uploads.hold() as take:
        form, upload, size = await image_request(request, ctx, take, EditForm)
        resolved = resolve_edit(ctx, task.caller, form, size)
        record = await task.accept(KIND, form, resolved, upload)
    waited = await task.wait(record, ctx.config(EditsConfig).max_wait_s)
    if isinstance(waited, JSONResponse):
        return waited
    result = waited.result or {}
    image_entry = (result.get("images") or [{}])[0]
    answer = EditResponse(
        task_id=waited.task_id,
        url=result.get("processed_image_url", ""),
        instruction=result.get("instruction", form.instruction),
        edit_prompt=result.get("edit_prompt", ""),
        backend=result.get("backend", ""),
        backend_model=result.get("backend_model"),
        cost_usd=result.get("cost_usd"),
        seed=image_entry.get("seed"),
        width=result.get("width", resolved.width),
        height=result.get("height", resolved.height),
        backends_failed=result.get("backends_failed"),
        variant=result.get("variant"),
        face_restoration=result.get("face_restoration"),
        analysis=result.get("analysis"),
        analysis_fallback=result.get("analysis_fallback"),
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers={"X-Task-Id": waited.task_id})
