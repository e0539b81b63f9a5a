"""The OpenAI-compatible images API: POST /v1/images/generations and POST /v1/images/edits.

Code written for OpenAI's images API (its official clients included) works against this server
by changing the base URL. A request becomes a durable task of kind `image` (text-to-image, or an
edit of the uploaded image: SD img2img over the whole picture), like any other; the route waits
for it up to `openai.max_wait_s` and answers in OpenAI's shape (`created`, `data[]` with `url` or
`b64_json` and `revised_prompt`). Errors use OpenAI's shape too (`{"error": {...}}`; invalid
input is 400). Past the wait the answer is 504 naming the task, which keeps running: poll
`GET /v1/result/{task_id}`, or repeat the request with the same `Idempotency-Key` to wait again
on the same task.

`model` may name this server's preset, one of its LoRAs, or an OpenAI model name listed in
`openai.model_aliases` (served by the preset without a LoRA). OpenAI fields that have no meaning
for Stable Diffusion (`quality`, `style`, `moderation`, `input_fidelity`, `partial_images`
without streaming) are accepted and ignored; ones it cannot honour (`background: transparent`,
`stream: true`, a `mask`, several images, gif or svg output) are refused with 400. With
`Prefer: respond-async` (RFC 7240) the answer is 202 with the task id at once, as /v1/generate's;
`Prefer: wait=N` shortens the wait. Stable Diffusion
settings OpenAI lacks may be sent as extra body fields: `negative_prompt`, `seed`,
`num_inference_steps`, `guidance_scale`, `strength` (edits).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.errors import validation_error
from serve_app.api.intake import (
    ERRORS,
    Submission,
    SubmissionDep,
    answered,
    auto_size,
    image_form,
    image_request,
    non_null,
    refuse,
)
from serve_app.api.schemas import TaskAccepted
from serve_app.api.slots import LONG
from serve_app.errors import NotFound
from serve_app.patterns import NON_BLANK_PATTERN
from serve_app.products.base import SchemaContext
from serve_app.products.images.flow import KIND
from serve_app.requests import GenerateRequest, LoraSelection, OptFloat, OptInt, OutputFormat, ResolvedGenerate
from serve_app.tasks.records import TaskRecord

router = APIRouter(prefix="/v1/images", tags=["OpenAI-compatible images"])


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error.")
    param: str | None = Field(default=None, description="The request field at fault, when known.")
    code: str = Field(description="This server's error_code (INVALID_INPUT, QUEUE_FULL, TIMEOUT, ...).")


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {
        "model": TaskAccepted,
        "description": "With `Prefer: respond-async` (RFC 7240): the task at once, as POST /v1/generate answers; "
        "poll GET /v1/result/{task_id} or stream GET /v1/tasks/{task_id}/events.",
    },
    400: {"model": OpenAIError, "description": "Invalid input (what the rest of /v1 answers with 422)."},
    401: {**ERRORS[401], "model": OpenAIError},
    403: {"model": OpenAIError, "description": "API keys on: over the key's per-image limit."},
    409: {"model": OpenAIError, "description": "Idempotency-Key reused with another body, or the task was cancelled."},
    413: {"model": OpenAIError, "description": "Upload too large."},
    429: {**ERRORS[429], "model": OpenAIError},
    500: {"model": OpenAIError, "description": "The task failed (GENERATION_FAILED, S3_UPLOAD_FAILED, ...)."},
    503: {**ERRORS[503], "model": OpenAIError},
    504: {
        "model": OpenAIError,
        "description": "Not done within openai.max_wait_s; the task goes on (its id is in the message and "
        "`X-Task-Id`): poll it, or repeat the request with the same Idempotency-Key.",
    },
}

Quality = Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"]


class _ImageParams(BaseModel):
    """Fields both routes take, named as OpenAI names them, plus Stable Diffusion's own."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What the image should show.")
    model: str | None = Field(
        default=None, description="This server's preset, one of its LoRAs, or an OpenAI model name (an alias)."
    )
    n: OptInt = Field(default=None, ge=1, le=10, description="Images to make (1); at most the preset's max.")
    size: str | None = Field(
        default=None,
        pattern=r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$",
        description="WIDTHxHEIGHT (multiples of 8 within the preset's limits) or auto.",
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="url (the stored image's URL) or b64_json; openai.default_response_format."
    )
    output_format: OutputFormat | None = Field(default=None, description="png, jpeg or webp (png).")
    output_compression: OptInt = Field(default=None, ge=0, le=100, description="jpeg/webp quality (90).")
    quality: Quality | None = Field(default=None, description="Accepted and ignored: steps set the quality.")
    background: Literal["opaque", "auto"] | None = Field(
        default=None, description="opaque or auto (transparent images are not offered)."
    )
    moderation: Literal["low", "auto"] | None = Field(default=None, description="Accepted and ignored.")
    stream: bool | None = Field(
        default=None, description="Only false: stream progress from GET /v1/tasks/{id}/events instead."
    )
    partial_images: OptInt = Field(default=None, ge=0, le=3, description="Ignored (no streaming).")
    user: str | None = Field(default=None, max_length=64, description="The user id (auth off); else ignored.")
    safety_identifier: str | None = Field(default=None, max_length=64, description="Takes precedence over user.")
    negative_prompt: str | None = Field(default=None, description="Extension: what to avoid.")
    seed: OptInt = Field(default=None, ge=0, lt=2**63, description="Extension: image i uses seed + i.")
    num_inference_steps: OptInt = Field(default=None, description="Extension: diffusion steps.")
    guidance_scale: OptFloat = Field(default=None, allow_inf_nan=False, description="Extension: CFG scale.")

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("Input should be False: stream progress from GET /v1/tasks/{id}/events instead")
        return stream


class ImageGenerationRequest(_ImageParams):
    """Body of POST /v1/images/generations (JSON)."""

    style: Literal["vivid", "natural"] | None = Field(default=None, description="Accepted and ignored.")


class ImageEditForm(_ImageParams):
    """Form fields of POST /v1/images/edits (multipart; the image in the file part `image` or `image[]`)."""

    input_fidelity: Literal["high", "low"] | None = Field(default=None, description="Accepted and ignored.")
    strength: OptFloat = Field(
        default=None, allow_inf_nan=False, description="Extension: how far to move from the image, (0, 1]."
    )


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = Field(default=None, description="The prompt the model was given.")


class ImagesResponse(BaseModel):
    """OpenAI's ImagesResponse."""

    created: int = Field(description="Unix time the request was accepted.")
    data: list[ImageData]
    background: Literal["opaque"] = "opaque"
    output_format: OutputFormat
    size: str = Field(description="WIDTHxHEIGHT of the images.")


def _to_generate(
    params: _ImageParams, ctx: IngressContext, caller: Caller, *, image_size: tuple[int, int] | None = None
) -> GenerateRequest:
    """The OpenAI request as this server's GenerateRequest (validated by `resolve` like any other)."""
    lora: LoraSelection | None = None
    model = params.model
    if model and model != ctx.preset.name and model not in ctx.args.openai.model_aliases:
        if ctx.preset.lora(model) is None:
            served = [ctx.preset.name, *(spec.name for spec in ctx.preset.loras)]
            error = refuse(f"model: {model!r} is not served here; use one of {', '.join(served)}.", "model")
            error.error_code = "MODEL_NOT_FOUND"
            raise error
        lora = LoraSelection(name=model)
    width = height = None
    if params.size and params.size != "auto":
        width, height = (int(side) for side in params.size.split("x"))
    elif image_size is not None:
        width, height = auto_size(image_size, ctx)
    fields: dict[str, Any] = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "num_inference_steps": params.num_inference_steps,
        "guidance_scale": params.guidance_scale,
        "height": height,
        "width": width,
        "seed": params.seed,
        "lora": lora,
        "n": params.n,
        "output_format": params.output_format,
        "output_compression": params.output_compression,
        "strength": getattr(params, "strength", None),
    }
    user = params.safety_identifier or params.user
    if user and caller.key is None:  # with API keys on, the key's user owns the task
        fields["user_id"] = user
    try:
        return GenerateRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc


async def _answer(
    task: Submission, record: TaskRecord, resolved: ResolvedGenerate, response_format: str | None
) -> JSONResponse:
    """Wait for the recorded task (or not, with `Prefer: respond-async`), answer in OpenAI's shape."""
    ctx = task.ctx
    waited = await task.wait(record, ctx.args.openai.max_wait_s)
    if isinstance(waited, JSONResponse):
        return waited
    record = waited
    headers = {"X-Task-Id": record.task_id}
    result = record.result or {}
    data: list[ImageData] = []
    for image in result.get("images", []):
        if (response_format or ctx.args.openai.default_response_format) == "b64_json":
            try:
                raw = await ctx.images.get(image["key"])
            except NotFound as exc:  # deleted by the retention sweep since
                raise NotFound("The task's images have expired.", error_code="IMAGE_EXPIRED") from exc
            data.append(ImageData(b64_json=base64.b64encode(raw).decode("ascii"), revised_prompt=result.get("prompt")))
        else:
            data.append(ImageData(url=image["url"], revised_prompt=result.get("prompt")))
    body = ImagesResponse(
        created=int(record.created_at),
        data=data,
        output_format=resolved.output_format,
        size=f"{resolved.width}x{resolved.height}",
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)


def _check_enabled(ctx: IngressContext) -> None:
    if not ctx.args.openai.enabled:
        raise NotFound("The OpenAI-compatible images API is off on this server (openai.enabled).")


@router.post(
    "/generations",
    dependencies=[LONG],
    **answered(ImagesResponse, _ERRORS),
    summary="OpenAI-compatible: make n images from a prompt; answers when they are done.",
)
async def generations(body: ImageGenerationRequest, task: SubmissionDep) -> JSONResponse:
    ctx, caller = task.ctx, task.caller
    _check_enabled(ctx)
    req = _to_generate(body, ctx, caller)
    resolved = caller.own(req.resolve(ctx.preset, ctx.limits), "user_id" in req.model_fields_set)
    record = await task.accept(KIND, req, resolved, None)
    return await _answer(task, record, resolved, body.response_format)


_EDIT_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImageEditRequest"}}},
}


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """Both routes' request schemas with this server's ranges (as the desk route's do for
    /v1/generate): sizes as the exact list of sides the preset takes, `n`, steps, guidance and
    prompt lengths from its limits, `model` as the names it serves. The edit is a multipart form."""
    preset, limits = doc.preset, doc.limits
    aliases = doc.args.openai.model_aliases if doc.args is not None else []
    sides = "|".join(str(side) for side in range(-(-limits.min_side // 8) * 8, limits.max_side + 1, 8))
    models = [preset.name, *(spec.name for spec in preset.loras), *aliases]

    def patched(model: type[_ImageParams]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        props = schema["properties"]
        props["prompt"].update(minLength=1, maxLength=limits.max_prompt_chars, pattern=NON_BLANK_PATTERN)
        non_null(props["negative_prompt"]).update(maxLength=limits.max_prompt_chars)
        non_null(props["n"]).update(maximum=min(10, limits.max_images))
        non_null(props["size"]).update(pattern=f"^(auto|({sides})x({sides}))$")
        non_null(props["model"]).update(enum=models)
        non_null(props["stream"]).update(enum=[False])
        non_null(props["num_inference_steps"]).update(minimum=1, maximum=limits.max_steps)
        non_null(props["guidance_scale"]).update(minimum=0, maximum=limits.max_guidance_scale)
        if "strength" in props:
            non_null(props["strength"]).update(exclusiveMinimum=0, maximum=1)
        schema["description"] = (
            f"Ranges are this server's (preset {preset.name}). Also: width x height x num_inference_steps x n "
            f"must be at most {limits.request_cost_limit()} (else 400 COST_TOO_HIGH)."
        )
        return schema

    return {
        "ImageGenerationRequest": patched(ImageGenerationRequest),
        "ImageEditRequest": _form(patched(ImageEditForm)),
    }


def _form(schema: dict[str, Any]) -> dict[str, Any]:
    """The edit's multipart form: the same fields, none null (a form leaves a field out), and the image."""
    return image_form(
        "ImageEditRequest",
        schema["properties"],
        ["image", "prompt"],
        schema["description"] + " The image may come as `image[]` (one); a `mask` is refused "
        "(whole-image edits only); an image that is not a PNG, JPEG, WEBP, GIF or BMP is 400 INVALID_IMAGE; "
        "num_inference_steps x strength must be at least 1.",
    )


@router.post(
    "/edits",
    dependencies=[LONG],
    **answered(ImagesResponse, _ERRORS),
    summary="OpenAI-compatible: edit an image by a prompt (SD img2img); answers when the images are done.",
    openapi_extra={"requestBody": _EDIT_BODY},
)
async def edits(request: Request, task: SubmissionDep) -> JSONResponse:
    ctx, caller = task.ctx, task.caller
    _check_enabled(ctx)
    with ctx.uploads.hold() as take:
        refused = {"mask": "this server edits the whole image (SD img2img)", "markup": ""}
        params, upload, size = await image_request(request, ctx, take, ImageEditForm, refused)
        req = _to_generate(params, ctx, caller, image_size=size)
        resolved = caller.own(req.resolve(ctx.preset, ctx.limits, has_image=True), "user_id" in req.model_fields_set)
        record = await task.accept(KIND, req, resolved, upload)
    # The wait holds no upload budget: the photo is stored, and the budget is for bodies being received.
    return await _answer(task, record, resolved, params.response_format)
