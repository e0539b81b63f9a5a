"""Virtual try-on (source spec enhancement-api-options.md): `POST /api/compose-dress`, the seed's path.

A person photo and a garment photo -> one image of the person wearing the garment. Multipart with
the file parts `person_image` and `garment_image` and an optional text field `prompt` (what a web
form sends), or JSON with `person_image_url` and `garment_image_url`, fetched as every image URL
is (SSRF-safe, within the byte cap and the upload budget). The request becomes a durable task of
kind `compose` (serve_app.products.compose.flow); the route waits for it at most
`compose.max_wait_s` (`Prefer: respond-async` / `wait=N`, 504 past the wait, as
serve_app.api.waiting says). Without a compose backend whose key is set it is 503
COMPOSE_NOT_CONFIGURED, and nothing is recorded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.errors import validation_error
from serve_app.api.intake import (
    SubmissionDep,
    answered,
    form_parts,
    image_form,
    json_object,
    non_null,
    read_body,
    refuse,
    waiting_route_errors,
)
from serve_app.api.photos import Photo, decoded_size
from serve_app.api.slots import LONG
from serve_app.backends.config import chain_entry
from serve_app.backends.provider import missing_keys
from serve_app.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from serve_app.patterns import NON_BLANK_PATTERN
from serve_app.products.base import SchemaContext
from serve_app.products.compose.config import ComposeConfig
from serve_app.products.compose.flow import KIND
from serve_app.products.compose.payload import ComposePayload
from serve_app.requests import GenerateRequest, OutputFormat, ResolvedGenerate
from serve_app.tasks import TaskRecord

router = APIRouter(tags=["Compose (virtual try-on)"])

PATH = "/api/compose-dress"
FILES = ("person_image", "garment_image")
EXAMPLE = {"person_image": "me.jpg", "garment_image": "dress.png", "prompt": "tuck the shirt in"}
URL_EXAMPLE = {
    "person_image_url": "https://example.com/me.jpg",
    "garment_image_url": "https://example.com/dress.png",
    "prompt": "tuck the shirt in",
}


class ComposeForm(BaseModel):
    """The text fields of POST /api/compose-dress (the photos come as the file parts `person_image`
    and `garment_image`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None,
        min_length=1,
        pattern=NON_BLANK_PATTERN,
        description="More to say to the compose model, added to its instruction (any language).",
    )
    output_format: OutputFormat | None = None
    user_id: str | None = Field(default=None, max_length=64)
    webhook_url: str | None = Field(default=None, max_length=2048)


class ComposeUrls(ComposeForm):
    """POST /api/compose-dress as JSON: the two photos by URL."""

    person_image_url: str = Field(max_length=4096, description="The person photo: an http(s) URL.")
    garment_image_url: str = Field(max_length=4096, description="The garment photo: an http(s) URL.")


class ComposeResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    task_id: str
    url: str = Field(description="The composed image.")
    prompt: str | None = Field(default=None, description="The request's own prompt, when it had one.")
    backend: str = Field(description="Which backend composed it: gemini, openai.")
    backend_model: str | None = None
    cost_usd: float | None = None
    width: int
    height: int
    backends_failed: list[dict[str, Any]] | None = Field(default=None, description="Backends tried before it.")


_ERRORS = waiting_route_errors(
    "Invalid photos or fields (INVALID_INPUT, INVALID_IMAGE, IMAGE_FETCH_FAILED, UNSAFE_URL).",
    "No backend of the compose chain could compose the photos (GENERATION_FAILED, with each one's reason).",
    "compose.max_wait_s",
)
_ERRORS[503] = {
    "description": "COMPOSE_NOT_CONFIGURED: no backend of the compose chain has its key set (GEMINI_API_KEY, "
    "OPENAI_API_KEY); or the queue is full (QUEUE_FULL, retry after Retry-After seconds)."
}

_MEDIA = {"multipart/form-data": "ComposeRequest", "application/json": "ComposeUrlsRequest"}
_BODY = {
    "required": True,
    "content": {media: {"schema": {"$ref": f"#/components/schemas/{name}"}} for media, name in _MEDIA.items()},
}


def request_schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    """The multipart form (two binary parts) and the JSON body (two URLs), with this server's ranges."""
    limits = doc.limits
    schema = ComposeUrls.model_json_schema(ref_template="#/components/schemas/{model}")
    props = schema["properties"]
    non_null(props["prompt"]).update(maxLength=limits.max_prompt_chars)
    if not doc.webhooks:
        props["webhook_url"] = {"type": "null", "description": "Webhooks are off on this server."}
    else:
        non_null(props["webhook_url"]).update(pattern="^https?://")
    for name in ("person_image_url", "garment_image_url"):
        props[name].update(pattern="^https?://")
    schema.update(
        title="ComposeUrlsRequest",
        additionalProperties=False,
        examples=[URL_EXAMPLE],
        description="Both URLs must be images the server can fetch (else 422 IMAGE_FETCH_FAILED / UNSAFE_URL).",
    )
    fields = {name: prop for name, prop in props.items() if not name.endswith("_image_url")}
    form = image_form(
        "ComposeRequest",
        fields,
        list(FILES),
        "Each photo a PNG, JPEG or WEBP image (else 422 INVALID_IMAGE).",
        examples=[EXAMPLE],
    )
    image = form["properties"].pop("image")
    form["properties"].update(
        person_image={**image, "description": "The person to dress (PNG, JPEG, WEBP)."},
        garment_image={**image, "description": "The garment to put on them (PNG, JPEG, WEBP)."},
    )
    return {"ComposeRequest": form, "ComposeUrlsRequest": schema}


async def read_compose(request: Request, ctx: IngressContext, take: Any) -> tuple[ComposeForm, Photo, Photo]:
    """The fields and the two photos (uploads checked to decode within the limits, or URLs)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/json", ""):
        raw = await read_body(request, 256 * 1024, take)
        try:
            urls = ComposeUrls.model_validate(json_object(raw))
        except ValidationError as exc:
            raise validation_error(list(exc.errors())) from exc
        return urls, Photo(url=urls.person_image_url), Photo(url=urls.garment_image_url)
    if content_type != "multipart/form-data":
        raise InvalidInput(
            f"Unsupported content type {content_type!r}; send multipart/form-data (person_image, garment_image) "
            "or JSON (person_image_url, garment_image_url)."
        )
    what = "the photos in the file parts `person_image` and `garment_image`"
    fields, files = await form_parts(request, ctx, take, uploads=2, what=what)
    images: dict[str, bytes] = {}
    for key, data in files:
        if key not in FILES:
            raise refuse(f"{key}: unexpected file part (the photos go in `person_image` and `garment_image`).", key)
        if key in images:
            raise refuse(f"{key}: given more than once.", key)
        if len(data) > ctx.limits.max_upload_bytes:
            raise PayloadTooLarge(f"{key}: the uploaded image exceeds {ctx.limits.max_upload_bytes} bytes.")
        images[key] = data
    for name in FILES:
        if name not in images:
            raise refuse(f"{name}: required (a PNG, JPEG or WEBP file part).", name)
    try:
        form = ComposeForm.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc
    for name in FILES:  # both decode before either is stored (nothing is kept of a refused request)
        await decoded_size(ctx, images[name])
    return form, Photo(upload=images["person_image"]), Photo(upload=images["garment_image"])


def check_configured(ctx: IngressContext) -> None:
    """503 COMPOSE_NOT_CONFIGURED unless some backend of the compose chain has its key set."""
    backends = ctx.args.backends
    names = [chain_entry(entry)[0] for entry in backends.chains[KIND]]
    missing = {name: missing_keys(backends.cloud(name)) for name in names if name != "local"}
    if not missing or all(missing.values()):
        wanted = "; ".join(f"{name}: ${' and $'.join(keys)}" for name, keys in missing.items()) or "none"
        raise ServiceUnavailable(
            f"No compose backend is configured: set the key of one of backends.chains.compose ({wanted}).",
            error_code="COMPOSE_NOT_CONFIGURED",
        )


def resolve_compose(ctx: IngressContext, caller: Caller, form: ComposeForm) -> ResolvedGenerate:
    shared = form.model_dump(include={"output_format", "user_id", "webhook_url"}, exclude_none=True)
    try:
        req = GenerateRequest.model_validate({**shared, "prompt": form.prompt or "compose a person and a garment"})
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc
    resolved = caller.own(req.resolve(ctx.preset, ctx.limits), form.user_id is not None)
    return resolved.model_copy(update={"product": ComposePayload(prompt=form.prompt)})


@router.post(
    PATH,
    dependencies=[LONG],
    **answered(ComposeResponse, _ERRORS),
    summary="Dress a person in a garment: two photos composed into one (Gemini, OpenAI as the fallback); "
    "answers when it is done.",
    openapi_extra={"requestBody": _BODY},
)
async def compose_dress(request: Request, task: SubmissionDep) -> JSONResponse:
    ctx = task.ctx
    with ctx.uploads.hold() as take:
        form, person, garment = await read_compose(request, ctx, take)
        resolved = resolve_compose(ctx, task.caller, form)
        check_configured(ctx)
        if person.url:
            resolved = resolved.model_copy(update={"initial_image_url": person.url})
        record = await task.accept(KIND, form, resolved, person.upload, more=(garment,))
    waited = await task.wait(record, ctx.config(ComposeConfig).max_wait_s)
    return waited if isinstance(waited, JSONResponse) else _answer(waited)


def _answer(done: TaskRecord) -> JSONResponse:
    """The finished task as the route answers it (the image, who made it, what it cost)."""
    result = done.result or {}
    answer = ComposeResponse(
        task_id=done.task_id,
        url=result.get("processed_image_url", ""),
        prompt=result.get("prompt"),
        backend=result.get("backend", ""),
        backend_model=result.get("backend_model"),
        cost_usd=result.get("cost_usd"),
        width=result.get("width", 0),
        height=result.get("height", 0),
        backends_failed=result.get("backends_failed"),
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers={"X-Task-Id": done.task_id})
