"""POST /v1/generate: the desk makeover. Parse (JSON, or multipart with the photo), validate, take
the photo in, hand off; the answer is 202 with the task id (`GET /v1/result/{task_id}` polls it).
`take_in` is all of it but the answer, which the seed's POST /generate (seed.py) shares."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from serve_app.api.auth import Caller, CallerDep
from serve_app.api.deps import Ctx, IdempotencyKey, IngressContext
from serve_app.api.errors import validation_error
from serve_app.api.intake import (
    ERRORS,
    FORM_OVERHEAD,
    accept_task,
    check_webhook,
    json_object,
    non_null,
    patch_settings,
    read_body,
    read_form,
)
from serve_app.api.schemas import TaskAccepted
from serve_app.api.slots import LONG_UPLOADS
from serve_app.errors import InvalidInput, PayloadTooLarge
from serve_app.patterns import NON_BLANK_PATTERN
from serve_app.products.base import SchemaContext
from serve_app.requests import GenerateRequest
from serve_app.tasks import TaskRecord

KIND = "desk"
router = APIRouter(prefix="/v1", tags=["desk makeover"])


# The body is parsed by hand (JSON or multipart), so it is declared to OpenAPI explicitly
# (`request_schemas` adds the running preset's limits).
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/GenerateForm"}},
    },
}


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """GenerateRequest's JSON schema with this server's limits, so the document says what it accepts.

    The ranges that depend on the preset (steps, sides and their multiple of 8, guidance, prompt
    length, LoRA names) are checked by `GenerateRequest.resolve`, not by the model, so they are
    added here from the running preset; `webhook_url` is only null while webhooks are off, and
    `s3://` image URLs are documented only with S3 storage. Two rules JSON Schema cannot state stay
    in the descriptions: height x width x steps at most `max_request_cost`, and an image URL must
    be fetchable.
    """
    preset, limits = doc.preset, doc.limits
    request = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = request.pop("$defs", {})
    props = request["properties"]
    props["prompt"].update(minLength=1, maxLength=limits.max_prompt_chars, pattern=NON_BLANK_PATTERN)
    non_null(props["negative_prompt"]).update(maxLength=limits.max_prompt_chars)
    patch_settings(props, limits, webhooks=doc.webhooks)
    non_null(props["guidance_scale"]).update(minimum=0, maximum=limits.max_guidance_scale)
    non_null(props["strength"]).update(exclusiveMinimum=0, maximum=1)
    non_null(props["n"]).update(minimum=1, maximum=limits.max_images)
    non_null(props["initial_image_url"]).update(pattern="^(https?|s3)://" if doc.s3_inputs else "^https?://")
    lora_names = [spec.name for spec in preset.loras]
    if lora_names:
        schemas["LoraSelection"]["properties"]["name"]["enum"] = lora_names
    else:  # a preset without adapters: any lora is refused
        props["lora"] = {"type": "null", "description": "This preset has no LoRA adapters."}
    cost = limits.request_cost_limit()
    request["description"] = (
        f"Every range below is this server's (preset {preset.name}). Also: height x width x "
        f"num_inference_steps x n must be at most {cost} (else 422 COST_TOO_HIGH); without a photo, a prompt "
        '(else 400 {"detail": "Prompt must not be empty."}); with a photo, '
        "num_inference_steps x strength must be at least 1; give initial_image_url or an uploaded `image`, "
        "not both; the URL must be an image the server can fetch (else 422 IMAGE_FETCH_FAILED / "
        "UNSAFE_URL) and an upload a PNG, JPEG, WEBP, GIF or BMP image (else 422 INVALID_IMAGE)."
    )
    return {**schemas, "GenerateRequest": request, "GenerateForm": _form_schema(request, lora_names)}


def _form_schema(request: dict[str, Any], lora_names: list[str]) -> dict[str, Any]:
    """The multipart form: the same fields, none of them null (a form leaves a field out instead),
    `lora` a LoRA name, and the photo in the file part `image`."""
    form = copy.deepcopy(request)
    props: dict[str, Any] = {}
    for name, prop in form["properties"].items():
        if prop.get("type") == "null":  # a field this server refuses (webhook_url with webhooks off)
            continue
        branch = dict(non_null(prop))
        branch.pop("$ref", None)
        props[name] = {**branch, "description": prop.get("description", "")}
    if lora_names:
        props["lora"] = {
            "type": "string",
            "enum": lora_names,
            "description": 'A LoRA name, or a JSON object like {"name": "...", "scale": 0.8}.',
        }
    props["image"] = {"type": "string", "format": "binary", "description": "The desk photo (JPEG, PNG, WEBP...)."}
    form["properties"] = props
    form["title"] = "GenerateForm"
    return form


def _form_value(key: str, value: str) -> Any:
    """A form field's value; an empty one is left out (None), but for `prompt`, where "" is the 400."""
    if key == "lora":
        value = value.strip()
        if value.startswith("{"):
            try:
                parsed = json_object(value.encode("utf-8", "surrogatepass"))
            except InvalidInput as exc:
                raise InvalidInput("lora: must be a JSON object or a LoRA name.") from exc
            return parsed
        return {"name": value}
    return value if value != "" or key == "prompt" else None


async def _parse(
    request: Request,
    ctx: IngressContext,
    take: Callable[[int], None],
    model: type[GenerateRequest],
    read_json: Callable[[bytes], dict[str, Any]],
) -> tuple[GenerateRequest, bytes | None]:
    """JSON body, or multipart with the photo in the part `image` and the other fields as form fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: bytes | None = None
    if content_type == "multipart/form-data":
        limit = ctx.limits.max_upload_bytes + FORM_OVERHEAD
        request._body = await read_body(request, limit, take)  # type: ignore[attr-defined]
        form = await read_form(request, max_files=1, max_fields=32)
        fields: dict[str, Any] = {}
        ignored = model.model_config.get("extra") == "ignore"  # the seed's lenient model: other fields skipped
        for key, value in form.multi_items():
            if ignored and isinstance(value, str) and key not in model.model_fields:
                continue
            if key in fields or (key == "image" and upload is not None):
                raise InvalidInput(f"{key}: given more than once.")
            if isinstance(value, str):
                fields[key] = _form_value(key, value)
            elif key == "image":
                upload = await value.read()
            else:
                raise InvalidInput(f"{key}: unexpected file part (only `image` is accepted).")
        if upload is not None and len(upload) > ctx.limits.max_upload_bytes:
            raise PayloadTooLarge(f"Uploaded image exceeds {ctx.limits.max_upload_bytes} bytes.")
        payload = {k: v for k, v in fields.items() if v is not None}
    elif content_type in ("application/json", ""):
        raw = await read_body(request, 256 * 1024, take)
        payload = read_json(raw)
    else:
        raise InvalidInput(f"Unsupported content type {content_type!r}; send JSON or multipart/form-data.")
    try:
        return model.model_validate(payload), upload
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc


@router.post(
    "/generate",
    dependencies=[LONG_UPLOADS],
    status_code=202,
    response_model=TaskAccepted,
    responses=ERRORS,
    summary="Submit a desk makeover; returns a task id at once.",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def submit(
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskAccepted:
    record = await take_in(request, ctx, caller, idempotency_key)
    response.headers["Location"] = f"/v1/result/{record.task_id}"
    return TaskAccepted(task_id=record.task_id, status=record.status)


async def take_in(
    request: Request,
    ctx: IngressContext,
    caller: Caller,
    idempotency_key: str | None,
    *,
    model: type[GenerateRequest] = GenerateRequest,
    read_json: Callable[[bytes], dict[str, Any]] = json_object,
    surface: str = "v1",
) -> TaskRecord:
    """A desk makeover request parsed into `model` (JSON by `read_json`, or multipart), validated,
    its photo taken in and its task recorded; `surface` says which API's shape its webhook takes."""
    with ctx.uploads.hold() as take:
        # 1. Parse and validate everything before touching any state. With a photo the prompt may
        #    be left out: the flow composes it from the caption and the templates.
        req, upload = await _parse(request, ctx, take, model, read_json)
        has_image = bool(req.initial_image_url) or upload is not None
        resolved = req.resolve(ctx.preset, ctx.limits, has_image=has_image, caption_prompt=has_image)
        resolved = caller.own(resolved, "user_id" in req.model_fields_set)
        if surface != resolved.surface:
            resolved = resolved.model_copy(update={"surface": surface})
        await check_webhook(ctx, resolved)

        # 2. Record it and hand it off.
        record, _ = await accept_task(
            ctx, caller, kind=KIND, req=req, resolved=resolved, upload=upload, idempotency_key=idempotency_key
        )
    return record
