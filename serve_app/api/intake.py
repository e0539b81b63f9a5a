"""What every product's route shares to take a request in: reading bodies and forms within the
upload budget, the photo (uploaded, fetched or s3://), recording the task (idempotency, admission)
and handing it to a runner, the webhook check, and the OpenAPI patches of the shared settings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api.auth import Caller, CallerDep
from serve_app.api.deps import Ctx, IdempotencyKey, IngressContext
from serve_app.api.errors import validation_error
from serve_app.api.photos import Photo, decoded_size, take_in_image, take_in_photo
from serve_app.api.schemas import ErrorResponse
from serve_app.api.views import request_fingerprint
from serve_app.api.waiting import PreferHeader, respond_or_wait
from serve_app.errors import InvalidInput, PayloadTooLarge
from serve_app.net import acheck_url
from serve_app.presets import GenerationLimits
from serve_app.requests import ResolvedGenerate
from serve_app.tasks import TaskRecord
from serve_app.tasks.store import Admission

M = TypeVar("M", bound=BaseModel)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields around an upload


ERRORS: dict[int | str, dict[str, Any]] = {
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


#: What every task-making JSON route can answer besides its own: keys, idempotency, size, shedding.
TASK_ROUTE_ERRORS = {code: ERRORS[code] for code in (401, 403, 409, 413, 422, 429, 503)}


def answered(model: type[BaseModel], errors: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    """A route's `@router.post` options when it answers with `model` (fields left out when null)
    and documents `errors`."""
    return {"response_model": model, "response_model_exclude_none": True, "responses": errors}


def waiting_route_errors(invalid: str, failed: str, wait_setting: str) -> dict[int | str, dict[str, Any]]:
    """The answers a route that waits for its task documents besides TASK_ROUTE_ERRORS: the 202
    of `Prefer: respond-async`, its own 422 and 500, the shed 503 and the 504 past the wait."""
    return {
        **TASK_ROUTE_ERRORS,
        202: {"description": "With Prefer: respond-async: the task id; poll GET /v1/result/{task_id}."},
        422: {"description": invalid},
        500: {"description": failed},
        503: {"description": "Queue full; retry after Retry-After seconds."},
        504: {"description": f"Not done within {wait_setting}: the task goes on (X-Task-Id)."},
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


def json_object(raw: bytes) -> dict[str, Any]:
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


def image_form(
    title: str,
    properties: dict[str, Any],
    required: list[str],
    description: str,
    examples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A multipart form's schema from a model's properties: none null (a form leaves a field out;
    a field that can only be null is not offered; an optional field may also be sent empty, which
    reads as left out), plus the binary `image` part."""
    props: dict[str, Any] = {}
    for name, prop in properties.items():
        branch = non_null(prop)
        if branch.get("type") == "null":
            continue
        value = {k: v for k, v in branch.items() if k not in ("title", "description")}
        if name not in required:  # an empty text field is read as left out (read_image_form): say so
            value = {"anyOf": [value, {"type": "string", "maxLength": 0}]}
        props[name] = {**value, "description": prop.get("description", "")}
    props["image"] = {"type": "string", "format": "binary", "description": "The image to edit (PNG, JPEG, WEBP...)."}
    form = {
        "title": title,
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": False,
        "description": description,
    }
    return {**form, "examples": examples} if examples else form


async def form_parts(
    request: Request, ctx: IngressContext, take: Any, *, uploads: int, what: str
) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart form of at most `uploads` images: its text fields (each at most once; empty
    ones left out) and its file parts (name, bytes) in order, read within the upload limit. Not
    multipart is INVALID_INPUT asking for `what`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise InvalidInput(f"Send multipart/form-data with {what}.")
    limit = ctx.limits.max_upload_bytes * uploads + FORM_OVERHEAD
    request._body = await read_body(request, limit, take)  # type: ignore[attr-defined]
    form = await read_form(request, max_files=4, max_fields=32)
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key in fields:
                raise refuse(f"{key}: given more than once.", key)
            if value != "":
                fields[key] = value
        else:
            files.append((key, await value.read()))
    return fields, files


async def read_image_form(
    request: Request, ctx: IngressContext, take: Any, refused: dict[str, str] | None = None
) -> tuple[dict[str, str], bytes]:
    """A multipart form with one image in the file part `image` (or `image[]`): its text fields
    (each at most once; empty ones left out) and the image's bytes, read within the upload limit.
    File parts named in `refused` are refused with their reason."""
    fields, files = await form_parts(request, ctx, take, uploads=1, what="the image in the file part `image`")
    images: list[bytes] = []
    for key, data in files:
        if key in ("image", "image[]"):
            images.append(data)
        elif refused is not None and key in refused:
            raise refuse(f"{key}: not supported{'; ' + refused[key] if refused[key] else ''}.", key)
        else:
            raise refuse(f"{key}: unexpected file part (the image goes in `image`).", key)
    if not images:
        raise refuse("image: required (a PNG, JPEG or WEBP file part).", "image")
    if len(images) > 1:
        raise refuse("image: one image per request.", "image")
    if len(images[0]) > ctx.limits.max_upload_bytes:
        raise PayloadTooLarge(f"Uploaded image exceeds {ctx.limits.max_upload_bytes} bytes.")
    return fields, images[0]


async def image_request(
    request: Request, ctx: IngressContext, take: Any, model: type[M], refused: dict[str, str] | None = None
) -> tuple[M, bytes, tuple[int, int]]:
    """A multipart image request: its form fields validated into `model`, the image's bytes, and
    its size once decoded within the limits (INVALID_IMAGE otherwise)."""
    fields, upload = await read_image_form(request, ctx, take, refused)
    try:
        form = model.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc
    return form, upload, await decoded_size(ctx, upload)  # the decoded image is dropped before any wait


def refuse(message: str, param: str) -> InvalidInput:
    error = InvalidInput(message)
    error.param = param
    return error


def auto_size(image_size: tuple[int, int], ctx: IngressContext) -> tuple[int, int]:
    """An edit's size when none is asked for: the image's aspect ratio at the preset's default
    area, both sides multiples of 8 within the limits."""
    defaults, limits = ctx.preset.defaults, ctx.limits
    width, height = image_size
    scale = (defaults.width * defaults.height / (width * height)) ** 0.5

    def side(value: float) -> int:
        return max(limits.min_side, min(limits.max_side, int(round(value * scale / 8)) * 8))

    return side(width), side(height)


def admission_for(ctx: IngressContext, caller: Caller) -> Admission:
    return Admission(
        max_active=ctx.args.tasks.max_active,
        max_active_cost=ctx.args.admission.max_active_cost,
        max_predicted_wait_s=ctx.args.admission.max_predicted_wait_s,
        retry_after_s=ctx.args.tasks.retry_after_s,
        limits=caller.limits,
    )


async def check_webhook(ctx: IngressContext, resolved: ResolvedGenerate) -> None:
    """A webhook URL is refused unless webhooks are on and the URL is safe to post to."""
    if resolved.webhook_url:
        ctx.webhooks.require("webhook_url: webhooks")
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
    more: tuple[Photo, ...] = (),
) -> tuple[TaskRecord, bool]:
    """Record a validated request as a task of `kind` and hand it to a runner: (record, created).

    Idempotent per Idempotency-Key (the same key and body answer with the first task, another body
    is a 409), shed by admission before the photo is taken in, admitted again inside the insert.
    `more`: input images after the photo (the compose product's garment), taken in after it; their
    keys go in `resolved.more_input_keys`, and with the task's objects (the retention sweep).
    """
    # 1. Idempotency: keys are scoped to the API key (auth on) or the user id, so callers never see
    #    each other's.
    body = req.model_dump(mode="json")
    uploads = (upload or b"") + b"".join(hashlib.sha256(photo.upload or b"").digest() for photo in more)
    fingerprint = request_fingerprint(body if kind == "desk" else {"kind": kind, **body}, uploads)
    scope = f"key:{caller.key_id}" if caller.key_id else resolved.user_id
    scoped_key = f"{scope}:{idempotency_key}" if idempotency_key else None
    if scoped_key:
        existing = await asyncio.to_thread(ctx.tasks.find_idempotent, scoped_key, fingerprint)
        if existing is not None:
            return existing, False

    # 2. Shed load (queue, its cost, the key's limits) before doing the expensive part.
    admission = admission_for(ctx, caller)
    await asyncio.to_thread(ctx.tasks.precheck, admission, resolved.cost, caller.key_id)

    # 3. Take the photo in (nothing a user sent is lost), then record the task and hand it off;
    #    the insert checks admission again, serialised with every other submit.
    input_key, initial_image_url = await take_in_photo(ctx, resolved, upload, caller.owner)
    more_keys = [(await take_in_image(ctx, resolved.user_id, p.upload, p.url, caller.owner))[0] for p in more]
    if more_keys:
        resolved = resolved.model_copy(update={"more_input_keys": more_keys})
    task_id = uuid.uuid4().hex
    record, _ = await asyncio.to_thread(
        lambda: ctx.tasks.create(
            task_id,
            kind=kind,
            request=resolved.model_dump(mode="json"),
            input_key=input_key,
            more_keys=more_keys,
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


@dataclass(frozen=True)
class Submission:
    """What a task-making route is given besides its body: the replica's context, the caller,
    and the Idempotency-Key and Prefer headers; it records the task and waits for it."""

    ctx: IngressContext
    caller: Caller
    idempotency_key: str | None
    prefer: str | None

    async def accept(
        self,
        kind: str,
        req: BaseModel,
        resolved: ResolvedGenerate,
        upload: bytes | None = None,
        more: tuple[Photo, ...] = (),
    ) -> TaskRecord:
        """The webhook check, then `accept_task` (idempotency, admission, the photos, the insert)."""
        await check_webhook(self.ctx, resolved)
        record, _ = await accept_task(
            self.ctx,
            self.caller,
            kind=kind,
            req=req,
            resolved=resolved,
            upload=upload,
            idempotency_key=self.idempotency_key,
            more=more,
        )
        return record

    async def wait(self, record: TaskRecord, max_wait_s: float, prefer: str | None = None) -> TaskRecord | JSONResponse:
        """The finished task, or the 202 the client preferred (serve_app.api.waiting)."""
        prefer = self.prefer if prefer is None else prefer
        return await respond_or_wait(self.ctx, self.caller, record, prefer, self.idempotency_key, max_wait_s)


async def submission(
    ctx: Ctx, caller: CallerDep, idempotency_key: IdempotencyKey = None, prefer: PreferHeader = None
) -> Submission:
    return Submission(ctx, caller, idempotency_key, prefer)


SubmissionDep = Annotated[Submission, Depends(submission)]
