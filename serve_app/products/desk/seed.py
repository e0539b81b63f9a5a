"""The seed's own desk API (desk-generate-api-spec.md) beside v1: `POST /generate` and
`GET /result/{task_id}` on the seed's paths and in its shapes, so a client written from the seed
works unchanged.

- Bodies are read leniently, as a Spring/Jackson client sends them: unknown fields are ignored,
  `null` (and `""` for a URL) is a field left out, and a trailing comma is read past (the seed's
  first example has one).
- A submit answers the seed's `{"task_id", "status": "queued"}` with 200 (what the seed's FastAPI
  example answers); errors are the seed's: `400 {"detail"}`, `422`/`500 {"error_code", "message"}`.
- A result is the seed's flat shape, the offers of each item at the top level
  (serve_app.tasks.views.seed_body); so is the webhook of a task submitted here.

Everything else is POST /v1/generate's: the same fields and ranges, intake and task (`take_in`).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, model_validator

from serve_app.api.auth import CallerDep
from serve_app.api.deps import Ctx, IdempotencyKey
from serve_app.api.intake import ERRORS, json_object
from serve_app.api.schemas import TaskAccepted
from serve_app.api.slots import LONG_UPLOADS
from serve_app.errors import InvalidInput
from serve_app.lenient import SeedLoraSelection, left_out_nulls, lenient_schema
from serve_app.products.desk.route import take_in
from serve_app.requests import SEED_SURFACE, GenerateRequest
from serve_app.tasks.views import SeedResult, seed_body, task_view

router = APIRouter(tags=["seed API (desk)"])

#: The seed's request examples, as it writes them (the photo URL and the webhook URL are its placeholders).
EXAMPLES: dict[str, str] = {
    "photo": '{\n  "initial_image_url": "https://bucket.s3.amazonaws.com/images/12.png",\n}',
    "polling": '{\n  "prompt": "minimal wooden desk setup",\n  "negative_prompt": "people, cartoon, blurry"\n}',
    "webhook": '{\n  "prompt": "dark-themed desk with LED strip",\n  "webhook_url": "https://myapp.com/notify"\n}',
}


#: The URL fields, where an empty string is left out too (a client's unset string); an empty prompt
#: is still the seed's 400.
URL_FIELDS = ("initial_image_url", "webhook_url")


class SeedGenerateRequest(GenerateRequest):
    """POST /v1/generate's fields, read leniently (serve_app.lenient): unknown fields ignored, null
    (and an empty URL) as left out."""

    model_config = ConfigDict(extra="ignore")

    lora: SeedLoraSelection | None = Field(default=None, description="LoRA adapter and scale to apply.")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_left_out(cls, data: Any) -> Any:
        return left_out_nulls(data, URL_FIELDS)


def _trailing_commas(text: str) -> list[int]:
    """Where the commas are that only a closing `}` or `]` follows (strings skipped); one pass."""
    found: list[int] = []
    comma, in_string, escaped = -1, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string, comma = True, -1
        elif ch == ",":
            comma = i
        elif ch in "}]":
            if comma >= 0:
                found.append(comma)
            comma = -1
        elif not ch.isspace():
            comma = -1
    return found


def lenient_json_object(raw: bytes) -> dict[str, Any]:
    """`json_object`, but reading past trailing commas (`{"a": 1,}`), as Jackson's
    ALLOW_TRAILING_COMMA does; any other fault is the same 422."""
    try:
        return json_object(raw)
    except InvalidInput:
        text = raw.decode("utf-8", errors="replace")  # not UTF-8: no comma makes it JSON, json_object says so
        commas = _trailing_commas(text)
        if not commas:
            raise
    for at in reversed(commas):
        text = text[:at] + text[at + 1 :]
    return json_object(text.encode("utf-8"))


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/SeedGenerateRequest"},
            "examples": {name: {"value": lenient_json_object(raw.encode())} for name, raw in EXAMPLES.items()},
        },
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/SeedGenerateForm"}},
    },
}


def seed_schemas(v1: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The seed's request schemas from POST /v1/generate's (`v1`, with this server's ranges): every
    field may be null and unknown fields are allowed (and ignored)."""
    text = json.dumps({name: v1[name] for name in ("GenerateRequest", "GenerateForm", "LoraSelection") if name in v1})
    seed = json.loads(text.replace("#/components/schemas/LoraSelection", "#/components/schemas/SeedLoraSelection"))
    request, form = seed["GenerateRequest"], seed["GenerateForm"]
    for name in URL_FIELDS:  # "" is left out too
        prop = request["properties"][name]
        branches = prop["anyOf"] if "anyOf" in prop else [{"type": "null"}]
        request["properties"][name] = {**prop, "anyOf": [*branches, {"type": "string", "maxLength": 0}]}
        request["properties"][name].pop("type", None)
    request["description"] = (
        "The seed's body (desk-generate-api-spec.md); an empty URL is left out too, and a trailing comma is read "
        "past. " + request.get("description", "")
    )
    out = {
        "SeedGenerateRequest": {**lenient_schema(request, everything_optional=True), "title": "SeedGenerateRequest"},
        "SeedGenerateForm": {**form, "title": "SeedGenerateForm", "additionalProperties": True},
    }
    if "LoraSelection" in seed:
        lora = lenient_schema(copy.deepcopy(seed["LoraSelection"]))
        out["SeedLoraSelection"] = {**lora, "title": "SeedLoraSelection"}
    return out


@router.post(
    "/generate",
    dependencies=[LONG_UPLOADS],
    response_model=TaskAccepted,
    responses=ERRORS,
    summary="The seed's submit (lenient body): 200 {task_id, status: queued}; poll GET /result/{task_id}.",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def generate(
    request: Request, response: Response, ctx: Ctx, caller: CallerDep, idempotency_key: IdempotencyKey = None
) -> TaskAccepted:
    record = await take_in(
        request,
        ctx,
        caller,
        idempotency_key,
        model=SeedGenerateRequest,
        read_json=lenient_json_object,
        surface=SEED_SURFACE,
    )
    response.headers["Location"] = f"/result/{record.task_id}"
    return TaskAccepted(task_id=record.task_id, status=record.status)


@router.get(
    "/result/{task_id}",
    response_model=None,
    responses={
        200: {"model": SeedResult, "description": "The task in the seed's shape."},
        **{code: ERRORS[code] for code in (401, 404)},
    },
    summary="The seed's poll: status, and when done the images and each item's offers at the top level.",
)
async def result(task_id: str, ctx: Ctx, caller: CallerDep) -> JSONResponse:
    record, stats = await asyncio.to_thread(ctx.tasks.view, task_id, caller.key_id)
    return JSONResponse(seed_body(task_view(record, stats)))
