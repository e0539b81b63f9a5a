"""A local OpenAI Images API (`POST /v1/images/generations`, `POST /v1/images/edits`) for tests.

Edits are multipart/form-data as OpenAI takes them: the `image` file part (a real image), or for
gpt-image-1 up to 16 `image[]` parts (a multi-image edit; dall-e-2 takes one image), `prompt`,
`model` (gpt-image-1 or dall-e-2; dall-e-3 cannot edit), `n`, `size`.

Answers `{created, data: [{b64_json, revised_prompt}], usage?}` as OpenAI does, checks the Bearer
key, the model's sizes and that dall-e is asked for `b64_json` while gpt-image models are not
sent `response_format` (OpenAI refuses it for them). Errors are OpenAI's `{"error": {message, type,
param, code}}`: 401 invalid_api_key, 403 unsupported_country_region_territory, 429
rate_limit_exceeded, 503 overloaded, 500 server_error, 400 content_policy_violation.
"""

from __future__ import annotations

import base64
import io
import time

from PIL import Image

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png, multipart_all

KEY = "sk-test-openai"
SIZES = {"dall-e-3": {"1024x1024", "1792x1024", "1024x1792"}, "gpt-image-1": {"1024x1024", "1536x1024", "1024x1536"}}
# mode -> (status, message, type, code): OpenAI's answers, the chat API's too (chat_stub).
ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "unauthorized": (
        401,
        "Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    "forbidden": (
        403,
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    "rate_limit": (
        429,
        "Rate limit reached for images per minute. Limit: 5/1min. Current: 6/1min.",
        "requests",
        "rate_limit_exceeded",
    ),
    "loading": (503, "The engine is currently overloaded, please try again later.", "server_error", None),
    "server_error": (500, "The server had an error processing your request.", "server_error", None),
    "bad_request": (
        400,
        "Your request was rejected as a result of our safety system.",
        "invalid_request_error",
        "content_policy_violation",
    ),
}


def openai_error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> Reply:
    """An OpenAI error answer, `{"error": {message, type, param, code}}` (every OpenAI API's shape)."""
    return Reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


class OpenAIStub(ProviderStub):
    def on_reset(self) -> None:
        self.edited_images: list[bytes] = []  # the images of the last edit, in the order sent

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        return openai_error(*ERRORS[mode])

    def _invalid(self, message: str, param: str) -> Reply:
        return openai_error(400, message, param=param)

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method == "POST" and request.path == "/v1/images/edits":
            return self._edit(request, mode)
        if request.method != "POST" or request.path != "/v1/images/generations":
            return openai_error(404, "Invalid URL")
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return self.error_reply("unauthorized", request)
        body = request.json()
        model = body.get("model", "dall-e-2")
        if body.get("size") not in SIZES.get(model, {body.get("size")}):
            return self._invalid(f"'{body.get('size')}' is not one of the supported sizes for {model}.", "size")
        if model.startswith("gpt-image") and "response_format" in body:
            return self._invalid("Unknown parameter: 'response_format'.", "response_format")
        if model.startswith("dall-e") and body.get("response_format") != "b64_json":
            return self._invalid("This stub only serves b64_json.", "response_format")
        if mode == "malformed":
            return Reply(200, {"created": int(time.time()), "data": [{"url": None}]})
        width, height = (int(side) // 16 for side in body["size"].split("x"))
        image = base64.b64encode(make_png(width, height)).decode()
        return Reply(
            200, {"created": int(time.time()), "data": [{"b64_json": image, "revised_prompt": body["prompt"]}]}
        )

    def _edit(self, request: StubRequest, mode: str) -> Reply:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return self.error_reply("unauthorized", request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return self._invalid("Expected multipart/form-data.", "image")
        fields, parts = multipart_all(request)
        model = fields.get("model", "dall-e-2")
        if model not in ("gpt-image-1", "dall-e-2"):
            return self._invalid(f"Invalid value: '{model}'. Value must be 'dall-e-2' or 'gpt-image-1'.", "model")
        if not fields.get("prompt"):
            return self._invalid("Missing required parameter: 'prompt'.", "prompt")
        images = [data for name, data in parts if name in ("image", "image[]")]
        if not images:
            return self._invalid("Missing required parameter: 'image'.", "image")
        if len(images) > (16 if model.startswith("gpt-image") else 1):
            return self._invalid(f"Too many images for {model}.", "image")
        for number, data in enumerate(images, 1):
            try:
                with Image.open(io.BytesIO(data)) as source:
                    source.verify()
            except Exception:
                return self._invalid(
                    f"Invalid image file or mode for image {number}, please check your image file.", "image"
                )
        self.edited_images = images
        if fields.get("size") not in SIZES.get(model, {"1024x1024", "512x512", "256x256"}):
            return self._invalid(f"'{fields.get('size')}' is not one of the supported sizes for {model}.", "size")
        if mode == "malformed":
            return Reply(200, {"created": int(time.time()), "data": [{"url": None}]})
        width, height = (int(side) // 16 for side in fields["size"].split("x"))
        image = base64.b64encode(make_png(width, height, (30, 90, 150))).decode()
        return Reply(200, {"created": int(time.time()), "data": [{"b64_json": image}]})


def _check(stub: OpenAIStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.json()
    assert body == {
        "model": "dall-e-3",
        "prompt": spec.prompt,
        "n": 1,
        "size": "1024x1024",
        "response_format": "b64_json",
    }  # type: ignore[attr-defined]


CASE = BackendCase(
    name="openai",
    stub=OpenAIStub,
    env={"OPENAI_API_KEY": KEY},
    refusal_words="rejected as a result of our safety system",
    api_path="/v1",
    check_request=_check,
    edit_model="gpt-image-1",
)
