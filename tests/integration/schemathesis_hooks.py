"""Schemathesis hooks for the API fuzz run (loaded with SCHEMATHESIS_HOOKS).

The OpenAPI document states every range the server checks, from the running preset, except the
rules JSON Schema cannot express, which the document states in words: height x width x steps
within `max_request_cost`, num_inference_steps x strength >= 1 for an image edit, not both an
image URL and an upload, an image URL the server can fetch, image bytes that are an image, and a
desk request's prompt, which only a photo makes optional (the seed's `400 {"detail"}` without).
`positive_data_acceptance` is run as it is, except that a 422 naming exactly one of those rules
is accepted for schema-valid data (a 400 in OpenAI's error shape on the OpenAI-compatible
/v1/images routes); any other rejection of schema-valid data still fails. `not_a_server_error` is
run as it is, except that the task queue's documented load shedding (503 QUEUE_FULL with
Retry-After) is not a server fault; any other 5xx still fails.

The /v1/images and scene routes answer when the images are done; the run asks them for the task
at once instead (`Prefer: respond-async`, a documented answer) and cancels it, as it does
/v1/generate's and /v1/articles/images'.

One mend of the tool itself: in negative mode, a body schema that schemathesis splits into a
drawn branch and judged branches (`allOf`, e.g. "not this object") judges each draw with
jsonschema-rs, which cannot read the `Binary` wrapper schemathesis draws for a `format: binary`
upload, and raises `ValueError: Unsupported type: 'Binary'`: a Runtime Error of the tool, not a
finding (CI stop 27, on /v1/generate). The judges here read an upload as "", as schemathesis' own
value channel already does (`format: binary` is an annotation; every other keyword still counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.jsonschema import strategy as jsonschema_strategy
from schemathesis.specs.openapi.checks import RejectedPositiveData, positive_data_acceptance
from schemathesis.specs.openapi.negative import _strip_binary
from schemathesis.transport.serialization import contains_binary

CROSS_FIELD_CODES = {"COST_TOO_HIGH", "IMAGE_FETCH_FAILED", "UNSAFE_URL", "INVALID_IMAGE", "DUPLICATE_INDEX"}
CROSS_FIELD_MESSAGES = (
    "num_inference_steps * strength must be at least 1 for an image edit.",
    "Give initial_image_url or an uploaded image, not both.",
    "dialogue by characters not in script_metadata.characters",  # the scene routes' rule in words
    "width and height: give both, or neither",  # /v1/edits' documented rule
    "Prompt must not be empty.",  # the desk routes: a prompt is optional only with a photo
)


OPENAI_ROUTES = ("/v1/images/generations", "/v1/images/edits")
SCENE_ROUTES = ("/api/v1/images/generations/external", "/api/v1/images/generations/internal")
WAITING_ROUTES = (
    *OPENAI_ROUTES,
    *SCENE_ROUTES,
    "/v1/textures",
    "/v1/edits",
    "/api/compose-dress",
)  # answer when done unless asked for the task at once
TASK_ROUTES = ("/v1/generate", "/generate", "/v1/articles/images", *WAITING_ROUTES)  # /generate: the seed's, 200

_tool_validator = jsonschema_strategy._validator


@lru_cache(maxsize=4096)  # as the tool's own; its cache reset calls .cache_clear()
def _validator_reading_uploads_as_text(schema: Any) -> Callable[[Any], bool]:
    is_valid = _tool_validator(schema)

    def judge(value: Any) -> bool:
        return bool(is_valid(_strip_binary(value) if contains_binary(value) else value))

    return judge


jsonschema_strategy._validator = _validator_reading_uploads_as_text


def _documented_cross_field_rule(response: schemathesis.Response) -> bool:
    if response.status_code not in (400, 422):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    if response.status_code == 400 and "detail" in body:  # the seed's 400: {"detail": "Prompt must not be empty."}
        body = {"message": body["detail"]}
    elif response.status_code == 400:  # the OpenAI routes' shape: {"error": {"code", "message", ...}}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        body = {"error_code": error.get("code"), "message": error.get("message")}
    message = str(body.get("message") or "")
    return body.get("error_code") in CROSS_FIELD_CODES or any(rule in message for rule in CROSS_FIELD_MESSAGES)


@schemathesis.check
def positive_data_acceptance_with_cross_field_rules(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if _documented_cross_field_rule(response):
            return None
        raise


def _documented_load_shedding(response: schemathesis.Response) -> bool:
    """503 QUEUE_FULL with Retry-After: the task queue's documented bound, shedding load as the
    README says (the fuzz run's cancelled tasks can fill it while they stop), not a server fault."""
    if response.status_code != 503 or not any(name.lower() == "retry-after" for name in response.headers):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body.get("error"), dict) else {}  # OpenAI's shape
    return (body.get("error_code") or error.get("code")) == "QUEUE_FULL"


@schemathesis.check
def not_a_server_error_but_load_shedding(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    if _documented_load_shedding(response):
        return None
    return not_a_server_error(ctx, response, case)


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: schemathesis.Case, **kwargs: object) -> None:
    """The routes that wait (OpenAI's, the scenes'): the task at once (202), not a wait for its images."""
    if case.method.upper() == "POST" and case.path in WAITING_ROUTES:
        case.headers = {**(case.headers or {}), "Prefer": "respond-async"}


@schemathesis.hook
def after_call(ctx: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
    """Cancel every task the run makes, at once: a fuzz run exercises the API, not the models, and
    a thousand random renders would hold the shared test app's replicas for many minutes."""
    if case.method.upper() != "POST" or case.path not in TASK_ROUTES or response.status_code not in (200, 202):
        return
    if response.status_code == 200 and case.path != "/generate":  # a waiting route that answered done
        return
    task_id = json.loads(response.content)["task_id"]
    url = response.request.url.rsplit(case.path, 1)[0] + f"/v1/tasks/{task_id}"
    requests.delete(url, headers=dict(case.headers or {}), timeout=30)
