"""Schemathesis hooks for the API fuzz run (loaded with SCHEMATHESIS_HOOKS).

The OpenAPI document states every range the server checks, from the running preset, except the
rules JSON Schema cannot express, which the document states in words: height x width x steps
within `max_request_cost`, num_inference_steps x strength >= 1 for an image edit, not both an
image URL and an upload, an image URL the server can fetch, and image bytes that are an image.
`positive_data_acceptance` is run as it is, except that a 422 naming exactly one of those rules
is accepted for schema-valid data; any other rejection of schema-valid data still fails.
"""

from __future__ import annotations

import json

import requests
import schemathesis
from schemathesis.specs.openapi.checks import RejectedPositiveData, positive_data_acceptance

CROSS_FIELD_CODES = {"COST_TOO_HIGH", "IMAGE_FETCH_FAILED", "UNSAFE_URL", "INVALID_IMAGE"}
CROSS_FIELD_MESSAGES = (
    "num_inference_steps * strength must be at least 1 for an image edit.",
    "Give initial_image_url or an uploaded image, not both.",
)


def _documented_cross_field_rule(response: schemathesis.Response) -> bool:
    if response.status_code != 422:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return body.get("error_code") in CROSS_FIELD_CODES or body.get("message") in CROSS_FIELD_MESSAGES


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


@schemathesis.hook
def after_call(ctx: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
    """Cancel every task the run makes, at once: a fuzz run exercises the API, not the models, and
    a thousand random renders would hold the shared test app's replicas for many minutes."""
    if case.method.upper() != "POST" or case.path != "/v1/generate" or response.status_code != 202:
        return
    task_id = json.loads(response.content)["task_id"]
    url = response.request.url.rsplit("/v1/generate", 1)[0] + f"/v1/tasks/{task_id}"
    requests.delete(url, headers=dict(case.headers or {}), timeout=30)
