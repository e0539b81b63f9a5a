"""POST /v1/generate, GET /v1/result/{task_id}, cancel. Parse, validate, take the photo in, hand off."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api.auth import Caller, get_caller
from serve_app.api.deps import IngressContext, get_ctx
from serve_app.api.errors import validation_error
from serve_app.api.schemas import ErrorResponse, TaskAccepted
from serve_app.api.views import request_fingerprint
from serve_app.errors import ImageFetchFailed, InvalidInput, NotFound, PayloadTooLarge
from serve_app.images import decode_image_and_format, stored_photo
from serve_app.net import acheck_url, fetch_bytes
from serve_app.patterns import NON_BLANK_PATTERN
from serve_app.presets import GenerationLimits, Preset
from serve_app.requests import GenerateRequest, ResolvedGenerate
from serve_app.storage.base import make_key
from serve_app.tasks import TaskRecord
from serve_app.tasks.store import Admission
from serve_app.tasks.views import TaskResult, task_view

router = APIRouter(prefix="/v1", tags=["desk makeover"])

_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields around an upload
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'Empty prompt: `{"detail": "Prompt must not be empty."}`'},
    401: {"model": ErrorResponse, "description": "API keys on: no key, or a malformed, unknown or revoked one."},
    403: {"model": ErrorResponse, "description": "API keys on: over the key's per-image limit, or another user_id."},
    404: {"model": ErrorResponse, "description": "Unknown task (or, with API keys on, another key's task)."},
    409: {"model": ErrorResponse, "description": "Idempotency-Key reused with another body / task finished."},
    413: {"model": ErrorResponse, "description": "Upload or fetched image too large."},
    422: {"model": ErrorResponse, "description": "Invalid input (INVALID_INPUT, UNSAFE_URL, COST_TOO_HIGH, ...)."},
    429: {"model": ErrorResponse, "description": "API keys on: the key's rate or in-flight limit; see Retry-After."},
    503: {"model": ErrorResponse, "description": "Queue, its cost budget or upload budget full; see Retry-After."},
}
_READ_ERRORS = {code: _ERRORS[code] for code in (401, 404)}
#: What every task-making JSON route can answer besides its own: keys, idempotency, size, shedding.
TASK_ROUTE_ERRORS = {code: _ERRORS[code] for code in (401, 403, 409, 413, 422, 429, 503)}
_CANCEL_ERRORS = {code: _ERRORS[code] for code in (401, 404, 409)}


# The body is parsed by hand (JSON or multipart), so it is declared to OpenAPI explicitly
# (`request_schemas` adds the running preset's limits).
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/GenerateForm"}},
    },
}


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None (so a model's own defaults apply to the rest, and
    `model_fields_set` says what the client sent)."""
    return {name: value for name, value in fields.items() if value is not None}


def non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """The branch of an `anyOf: [X, null]` property that is not null (or the property itself)."""
    return next((b for b in prop.get("anyOf", []) if b.get("type") != "null"), prop)


def patch_settings(props: dict[str, Any], limits: GenerationLimits, *, webhooks: bool) -> None:
    """The preset's ranges of the settings every task route shares (steps, sides, webhook_url), in a
    request schema's properties, so the document says what the server accepts."""
    non_null(props["num_inference_steps"]).update(minimum=1, maximum=limits.max_steps)
    for side in ("height", "width"):
        non_null(props[side]).update(minimum=limits.min_side, maximum=limits.max_side, multipleOf=8)
    if not webhooks:
        props["webhook_url"] = {"type": "null", "description": "Webhooks are off on this server."}
    else:
        non_null(props["webhook_url"]).update(pattern="^https?://")


def request_schemas(
    preset: Preset, limits: GenerationLimits, *, webhooks: bool, s3_inputs: bool
) -> dict[str, dict[str, Any]]:
    """GenerateRequest's JSON schema with this server's limits, so the document says what it accepts.

        The ranges that depend on the preset (steps, sides and their multiple of 8, guidance, prompt
        length, LoRA names) are checked by `GenerateRequest.resolve`, not by the model, so they are
        added here from the running preset; `webhook_url` is only null while webhooks are off, and
    `s3://` image URLs are documented only with S3 storage. Two
        rules JSON Schema cannot state stay in the descriptions: height x width x steps at most
        `max_request_cost`, and an image URL must be fetchable.
    """
    request = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = request.pop("$defs", {})
    props = request["properties"]
    props["prompt"].update(minLength=1, maxLength=limits.max_prompt_chars, pattern=NON_BLANK_PATTERN)
    non_null(props["negative_prompt"]).update(maxLength=limits.max_prompt_chars)
    patch_settings(props, limits, webhooks=webhooks)
    non_null(props["guidance_scale"]).update(minimum=0, maximum=limits.max_guidance_scale)
    non_null(props["strength"]).update(exclusiveMinimum=0, maximum=1)
    non_null(props["n"]).update(minimum=1, maximum=limits.max_images)
    non_null(props["initial_image_url"]).update(pattern="^(https?|s3)://" if s3_inputs else "^https?://")
    lora_names = [spec.name for spec in preset.loras]
    if lora_names:
        schemas["LoraSelection"]["properties"]["name"]["enum"] = lora_names
    else:  # a preset without adapters: any lora is refused
        props["lora"] = {"type": "null", "description": "This preset has no LoRA adapters."}
    cost = limits.request_cost_limit()
    request["description"] = (
        f"Every range below is this server's (preset {preset.name}). Also: height x width x "
        f"num_inference_steps x n must be at most {cost} (else 422 COST_TOO_HIGH); with a photo, "
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


async def read_body(request: Request, limit: int, take: Callable[[int], None]) -> bytes:
    """The raw body, refused with 413 past `limit` (by Content-Length, then while streaming); every
    chunk is counted against the replica's upload budget by `take` (503 when it is spent)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes.")
        take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, *, max_files: int, max_fields: int) -> FormData:
    """The multipart form of a body already read by `read_body`; a malformed one (no parts, a
    broken boundary, too many parts) is the route's INVALID_INPUT, like a malformed JSON body,
    instead of Starlette's bare 400."""
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except StarletteHTTPException as exc:
        if exc.status_code != 400:
            raise
        raise InvalidInput(f"Malformed multipart/form-data body: {exc.detail}") from exc


def _json_object(raw: bytes) -> dict[str, Any]:
    """A JSON body as a dict, or InvalidInput (422) naming what is wrong; never a 500.

    The parser itself refuses some inputs with errors other than JSONDecodeError: numbers longer
    than Python's 4300-digit limit (ValueError) and nesting deeper than its recursion limit
    (RecursionError). A lone UTF-16 surrogate (`"\\ud800"`) parses but can never be stored or
    sent on as UTF-8, so it is refused here too.
    """
    try:
        payload = json.loads(raw or b"{}")
    except RecursionError as exc:
        raise InvalidInput("Request body nests too deeply.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput("Request body is not valid JSON.") from exc
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidInput("Request body has a number too long to read.") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("Request body must be a JSON object.")
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput("Request body has a string that is not valid Unicode (a lone surrogate).") from exc
    except RecursionError as exc:  # pragma: no cover - the parser refuses deeper nesting first
        raise InvalidInput("Request body nests too deeply.") from exc
    return payload


def _form_value(key: str, value: str) -> Any:
    if key == "lora":
        value = value.strip()
        if value.startswith("{"):
            try:
                parsed = _json_object(value.encode("utf-8", "surrogatepass"))
            except InvalidInput as exc:
                raise InvalidInput("lora: must be a JSON object or a LoRA name.") from exc
            return parsed
        return {"name": value}
    return value if value != "" else None


async def _parse(
    request: Request, ctx: IngressContext, take: Callable[[int], None]
) -> tuple[GenerateRequest, bytes | None]:
    """JSON body, or multipart with the photo in the part `image` and the other fields as form fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: bytes | None = None
    if content_type == "multipart/form-data":
        limit = ctx.limits.max_upload_bytes + _FORM_OVERHEAD
        request._body = await read_body(request, limit, take)  # type: ignore[attr-defined]
        form = await read_form(request, max_files=1, max_fields=32)
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
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
        payload = _json_object(raw)
    else:
        raise InvalidInput(f"Unsupported content type {content_type!r}; send JSON or multipart/form-data.")
    try:
        return GenerateRequest.model_validate(payload), upload
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc


async def _photo_bytes(ctx: IngressContext, url: str) -> bytes:
    if url.startswith("s3://"):
        from serve_app.storage.s3 import S3ImageStore

        if not isinstance(ctx.images, S3ImageStore):
            raise InvalidInput("initial_image_url: s3:// URLs need the S3 storage backend.")
        try:
            return await ctx.images.get_s3_url(url, max_bytes=ctx.limits.max_upload_bytes)
        except NotFound as exc:
            raise ImageFetchFailed("initial_image_url: no such object in the bucket.") from exc
    policy = ctx.args.fetch.model_copy(update={"max_bytes": ctx.limits.max_upload_bytes})
    return await fetch_bytes(url, policy)


async def _take_in_photo(
    ctx: IngressContext, request: ResolvedGenerate, upload: bytes | None
) -> tuple[str | None, str | None]:
    """Fetch or receive the photo, decode and bound it, store it (as sent when PNG, JPEG or WEBP,
    else as PNG) under the request's user: (input_key, initial_image_url)."""
    if request.initial_image_url and upload is not None:
        raise InvalidInput("Give initial_image_url or an uploaded image, not both.")
    if not request.initial_image_url and upload is None:
        return None, None
    data = upload if upload is not None else await _photo_bytes(ctx, request.initial_image_url or "")
    limits = ctx.limits
    image, fmt = await asyncio.to_thread(
        decode_image_and_format, data, limits.max_image_pixels, limits.max_upload_bytes
    )
    stored, ext, media_type = await asyncio.to_thread(stored_photo, data, image, fmt)
    key = make_key(request.user_id, ext=ext)
    stored_url = await ctx.images.put(key, stored, content_type=media_type)
    return key, request.initial_image_url or stored_url


def _admission(ctx: IngressContext, caller: Caller) -> Admission:
    return Admission(
        max_active=ctx.args.tasks.max_active,
        max_active_cost=ctx.args.admission.max_active_cost,
        retry_after_s=ctx.args.tasks.retry_after_s,
        limits=caller.limits,
    )


@router.post(
    "/generate",
    status_code=202,
    response_model=TaskAccepted,
    responses=_ERRORS,
    summary="Submit a desk makeover; returns a task id at once.",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def submit(
    request: Request,
    response: Response,
    ctx: IngressContext = Depends(get_ctx),
    caller: Caller = Depends(get_caller),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> TaskAccepted:
    with ctx.uploads.hold() as take:
        # 1. Parse and validate everything before touching any state.
        req, upload = await _parse(request, ctx, take)
        has_image = bool(req.initial_image_url) or upload is not None
        resolved = caller.own(
            req.resolve(ctx.preset, ctx.limits, has_image=has_image), "user_id" in req.model_fields_set
        )
        await check_webhook(ctx, resolved)

        record, _ = await accept_task(
            ctx, caller, kind="desk", req=req, resolved=resolved, upload=upload, idempotency_key=idempotency_key
        )
    response.headers["Location"] = f"/v1/result/{record.task_id}"
    return TaskAccepted(task_id=record.task_id, status=record.status)


async def check_webhook(ctx: IngressContext, resolved: ResolvedGenerate) -> None:
    """A webhook URL is refused unless webhooks are on and the URL is safe to post to."""
    if resolved.webhook_url:
        if not ctx.settings.imagegen_webhook_secret:
            raise InvalidInput("webhook_url: webhooks are not enabled on this server.", error_code="WEBHOOKS_DISABLED")
        await acheck_url(resolved.webhook_url, ctx.args.fetch)


async def accept_task(
    ctx: IngressContext,
    caller: Caller,
    *,
    kind: str,
    req: BaseModel,
    resolved: ResolvedGenerate,
    upload: bytes | None,
    idempotency_key: str | None,
) -> tuple[TaskRecord, bool]:
    """Record a validated request as a task of `kind` and hand it to a runner: (record, created).

    Idempotent per Idempotency-Key (the same key and body answer with the first task, another body
    is a 409), shed by admission before the photo is taken in, admitted again inside the insert.
    """
    # 1. Idempotency: keys are scoped to the API key (auth on) or the user id, so callers never see
    #    each other's.
    body = req.model_dump(mode="json")
    fingerprint = request_fingerprint(body if kind == "desk" else {"kind": kind, **body}, upload or b"")
    scope = f"key:{caller.key_id}" if caller.key_id else resolved.user_id
    scoped_key = f"{scope}:{idempotency_key}" if idempotency_key else None
    if scoped_key:
        existing = await asyncio.to_thread(ctx.tasks.find_idempotent, scoped_key, fingerprint)
        if existing is not None:
            return existing, False

    # 2. Shed load (queue, its cost, the key's limits) before doing the expensive part.
    admission = _admission(ctx, caller)
    await asyncio.to_thread(ctx.tasks.precheck, admission, resolved.cost, caller.key_id)

    # 3. Take the photo in (nothing a user sent is lost), then record the task and hand it off;
    #    the insert checks admission again, serialised with every other submit.
    input_key, initial_image_url = await _take_in_photo(ctx, resolved, upload)
    task_id = uuid.uuid4().hex
    record, _ = await asyncio.to_thread(
        lambda: ctx.tasks.create(
            task_id,
            kind=kind,
            request=resolved.model_dump(mode="json"),
            input_key=input_key,
            initial_image_url=initial_image_url,
            webhook_url=resolved.webhook_url,
            idempotency_key=scoped_key,
            request_hash=fingerprint,
            cost=resolved.cost,
            key_id=caller.key_id,
            admission=admission,
            dispatch_grace_s=ctx.args.tasks.dispatch_grace_s,
        )
    )
    created = record.task_id == task_id
    if created:
        ctx.metrics.submitted(kind)
        ctx.dispatch(task_id)
    return record, created


@router.get(
    "/result/{task_id}",
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses=_READ_ERRORS,
    summary="Poll a task: status, progress while running, the result when done.",
)
async def result(
    task_id: str, ctx: IngressContext = Depends(get_ctx), caller: Caller = Depends(get_caller)
) -> TaskResult:
    record, stats = await asyncio.to_thread(ctx.tasks.view, task_id, caller.key_id)
    return task_view(record, stats)


async def _cancel(task_id: str, ctx: IngressContext, caller: Caller) -> TaskResult:
    record = await asyncio.to_thread(ctx.tasks.request_cancel, task_id, caller.key_id)
    return task_view(record)


@router.delete(
    "/tasks/{task_id}",
    status_code=202,
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses=_CANCEL_ERRORS,
    summary="Cancel a task: a queued task fails CANCELLED at once, a running one at its next step.",
)
async def cancel(
    task_id: str, ctx: IngressContext = Depends(get_ctx), caller: Caller = Depends(get_caller)
) -> TaskResult:
    return await _cancel(task_id, ctx, caller)


@router.post(
    "/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses=_CANCEL_ERRORS,
    summary="Same as DELETE /v1/tasks/{task_id}.",
)
async def cancel_post(
    task_id: str, ctx: IngressContext = Depends(get_ctx), caller: Caller = Depends(get_caller)
) -> TaskResult:
    return await _cancel(task_id, ctx, caller)
