"""A local Stability AI Stable Image API: `POST /v2beta/stable-image/generate/{core|ultra|sd3}`.

Takes multipart/form-data (prompt, negative_prompt, aspect_ratio, seed, output_format) with
`Authorization: Bearer` and `Accept: image/*`, answers the image bytes with `finish-reason` and
`seed` headers, as Stability does. Errors are Stability's `{"id", "name", "errors": [...]}`: 401
unauthorized, 403 content_moderation (a refused prompt, not a bad key), 429 rate limit (150
requests in 10 s), 500 internal, 503, 400 bad_request. `forbidden` answers a 403 about the
account's permissions. `filtered = True` answers `finish-reason: CONTENT_FILTERED`.
"""

from __future__ import annotations

import uuid
from email.parser import BytesParser
from email.policy import default

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png, multipart

KEY = "sk-test-stability"
ASPECTS = {"21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"}
_ERRORS = {
    "unauthorized": (401, "unauthorized", ["authorization: invalid or missing API key"]),
    "forbidden": (403, "forbidden", ["your account does not have access to this model"]),
    "rate_limit": (
        429,
        "rate_limit_exceeded",
        ["You have exceeded the rate limit of 150 requests within a 10 second period"],
    ),
    "loading": (503, "service_unavailable", ["The service is temporarily unavailable"]),
    "server_error": (500, "internal_error", ["An unexpected server error has occurred"]),
    "bad_request": (400, "bad_request", ["prompt: cannot be empty or longer than 10000 characters"]),
}


def form_fields(request: StubRequest) -> dict[str, str]:
    """The multipart form's fields (what Stability's API reads)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=default).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_content() if part.get_content_maintype() == "text" else part.get_payload()
    return fields


class StabilityStub(ProviderStub):
    def on_reset(self) -> None:
        self.filtered = False

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        status, name, errors = _ERRORS[mode]
        return Reply(status, {"id": uuid.uuid4().hex, "name": name, "errors": errors})

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method != "POST" or not request.path.startswith("/v2beta/stable-image/generate/"):
            return Reply(404, {"id": uuid.uuid4().hex, "name": "not_found", "errors": ["Not found"]})
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return self.error_reply("unauthorized", request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return self.error_reply("bad_request", request)
        fields, files = multipart(request)
        if not fields.get("prompt") or fields.get("aspect_ratio", "1:1") not in ASPECTS:
            return self.error_reply("bad_request", request)
        model = request.path.rsplit("/", 1)[-1]
        image_to_image = fields.get("mode") == "image-to-image" or (model == "ultra" and "image" in files)
        if image_to_image:
            # Stability's image-to-image: sd3 (mode) and ultra take `image` and `strength`; core takes neither,
            # and an aspect ratio goes with text-to-image only.
            strength = fields.get("strength", "")
            if model not in ("sd3", "ultra") or "image" not in files or "aspect_ratio" in fields:
                return self.error_reply("bad_request", request)
            if not strength.replace(".", "", 1).isdigit() or not 0 <= float(strength) <= 1:
                return self.error_reply("bad_request", request)
        elif "image" in files:
            return self.error_reply("bad_request", request)
        if "moderat" in fields["prompt"]:
            return Reply(
                403,
                {
                    "id": uuid.uuid4().hex,
                    "name": "content_moderation",
                    "errors": ["Your request was flagged by our content moderation system"],
                },
            )
        if mode == "malformed":
            return Reply(200, b"<html>gateway</html>", {"Content-Type": "text/html"})
        seed = fields.get("seed", "0")
        headers = {
            "Content-Type": "image/png",
            "finish-reason": "CONTENT_FILTERED" if self.filtered else "SUCCESS",
            "seed": seed,
        }
        return Reply(200, make_png(40, 40), headers)


def _check(stub: StabilityStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.path == "/v2beta/stable-image/generate/core" and sent.headers["accept"] == "image/*"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    fields = form_fields(sent)
    assert fields["prompt"] == spec.prompt and fields["negative_prompt"] == spec.negative_prompt  # type: ignore[attr-defined]
    assert fields["aspect_ratio"] == "1:1" and fields["seed"] == str(spec.seed) and fields["output_format"] == "png"  # type: ignore[attr-defined]


CASE = BackendCase(
    name="stability",
    stub=StabilityStub,
    env={"STABILITY_API_KEY": KEY},
    refusal_words="cannot be empty",
    check_request=_check,
    edit_model="sd3",
)
