"""POST /v1/generate, GET /v1/result/{task_id}, cancel. Parse, validate, take the photo in, hand off."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import ValidationError

from serve_app.api.deps import IngressContext, get_ctx
from serve_app.api.errors import validation_error
from serve_app.api.views import request_fingerprint, task_view
from serve_app.errors import ImageFetchFailed, InvalidInput, NotFound, PayloadTooLarge, QueueFull
from serve_app.images import decode_image, encode_png
from serve_app.net import acheck_url, fetch_bytes
from serve_app.protocol import ErrorResponse, GenerateRequest, TaskAccepted, TaskResult
from serve_app.storage.base import make_key

router = APIRouter(prefix="/v1", tags=["desk makeover"])

_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields around an upload
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'Empty prompt: `{"detail": "Prompt must not be empty."}`'},
    404: {"model": ErrorResponse, "description": "Unknown task."},
    409: {"model": ErrorResponse, "description": "Idempotency-Key reused with another body / task finished."},
    413: {"model": ErrorResponse, "description": "Upload or fetched image too large."},
    422: {"model": ErrorResponse, "description": "Invalid input (INVALID_INPUT, UNSAFE_URL, ...)."},
    503: {"model": ErrorResponse, "description": "Queue full; see Retry-After."},
}


# The body is parsed by hand (JSON or multipart), so it is declared to OpenAPI explicitly.
OPENAPI_MODELS = [GenerateRequest]
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
        "multipart/form-data": {
            "schema": {
                "allOf": [
                    {"$ref": "#/components/schemas/GenerateRequest"},
                    {
                        "type": "object",
                        "properties": {
                            "image": {
                                "type": "string",
                                "format": "binary",
                                "description": "The desk photo (JPEG, PNG, WEBP...) instead of initial_image_url.",
                            }
                        },
                    },
                ]
            }
        },
    },
}


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` (by Content-Length, then while streaming)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


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


async def _parse(request: Request, ctx: IngressContext) -> tuple[GenerateRequest, bytes | None]:
    """JSON body, or multipart with the photo in the part `image` and the other fields as form fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: bytes | None = None
    if content_type == "multipart/form-data":
        request._body = await _read_body(request, ctx.limits.max_upload_bytes + _FORM_OVERHEAD)  # type: ignore[attr-defined]
        form = await request.form(max_files=1, max_fields=32)
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
        raw = await _read_body(request, 256 * 1024)
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
    ctx: IngressContext, req: GenerateRequest, upload: bytes | None
) -> tuple[str | None, str | None]:
    """Fetch or receive the photo, decode and bound it, keep a PNG copy: (input_key, initial_image_url)."""
    if req.initial_image_url and upload is not None:
        raise InvalidInput("Give initial_image_url or an uploaded image, not both.")
    if not req.initial_image_url and upload is None:
        return None, None
    data = upload if upload is not None else await _photo_bytes(ctx, req.initial_image_url or "")
    image = await asyncio.to_thread(decode_image, data, ctx.limits.max_image_pixels, ctx.limits.max_upload_bytes)
    png = await asyncio.to_thread(encode_png, image)
    key = make_key(req.user_id)
    stored_url = await ctx.images.put(key, png)
    return key, req.initial_image_url or stored_url


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
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> TaskAccepted:
    # 1. Parse and validate everything before touching any state.
    req, upload = await _parse(request, ctx)
    resolved = req.resolve(ctx.preset, ctx.limits, has_image=bool(req.initial_image_url) or upload is not None)
    if resolved.webhook_url:
        if not ctx.settings.imagegen_webhook_secret:
            raise InvalidInput("webhook_url: webhooks are not enabled on this server.", error_code="WEBHOOKS_DISABLED")
        await acheck_url(resolved.webhook_url, ctx.args.fetch)

    # 2. Idempotency: the same key and body answer with the same task; another body is a 409.
    fingerprint = request_fingerprint(req.model_dump(mode="json"), upload or b"")
    scoped_key = f"{req.user_id}:{idempotency_key}" if idempotency_key else None
    if scoped_key:
        existing = await asyncio.to_thread(ctx.tasks.find_idempotent, scoped_key, fingerprint)
        if existing is not None:
            response.headers["Location"] = f"/v1/result/{existing.task_id}"
            return TaskAccepted(task_id=existing.task_id, status=existing.status)

    # 3. Shed load before doing the expensive part.
    cfg = ctx.args.tasks
    if await asyncio.to_thread(ctx.tasks.count_active) >= cfg.max_active:
        raise QueueFull(retry_after_s=cfg.retry_after_s)

    # 4. Take the photo in (nothing a user sent is lost), then record the task and hand it off.
    input_key, initial_image_url = await _take_in_photo(ctx, req, upload)
    task_id = uuid.uuid4().hex
    record, _ = await asyncio.to_thread(
        lambda: ctx.tasks.create(
            task_id,
            kind="desk",
            request=resolved.model_dump(mode="json"),
            input_key=input_key,
            initial_image_url=initial_image_url,
            webhook_url=resolved.webhook_url,
            idempotency_key=scoped_key,
            request_hash=fingerprint,
            max_active=cfg.max_active,
            retry_after_s=cfg.retry_after_s,
            dispatch_grace_s=cfg.dispatch_grace_s,
        )
    )
    if record.task_id == task_id:
        ctx.metrics.submitted("desk")
        ctx.dispatch(task_id)
    response.headers["Location"] = f"/v1/result/{record.task_id}"
    return TaskAccepted(task_id=record.task_id, status=record.status)


@router.get(
    "/result/{task_id}",
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses={404: _ERRORS[404]},
    summary="Poll a task: status, progress while running, the result when done.",
)
async def result(task_id: str, ctx: IngressContext = Depends(get_ctx)) -> TaskResult:
    record = await asyncio.to_thread(ctx.tasks.require, task_id)
    return task_view(record)


async def _cancel(task_id: str, ctx: IngressContext) -> TaskResult:
    record = await asyncio.to_thread(ctx.tasks.request_cancel, task_id)
    return task_view(record)


@router.delete(
    "/tasks/{task_id}",
    status_code=202,
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses={404: _ERRORS[404], 409: _ERRORS[409]},
    summary="Cancel a task: a queued task fails CANCELLED at once, a running one at its next step.",
)
async def cancel(task_id: str, ctx: IngressContext = Depends(get_ctx)) -> TaskResult:
    return await _cancel(task_id, ctx)


@router.post(
    "/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses={404: _ERRORS[404], 409: _ERRORS[409]},
    summary="Same as DELETE /v1/tasks/{task_id}.",
)
async def cancel_post(task_id: str, ctx: IngressContext = Depends(get_ctx)) -> TaskResult:
    return await _cancel(task_id, ctx)
