"""A local Gemini API: `POST /v1beta/models/{model}:generateContent`, for image generation, image
editing (image parts in), and image understanding with structured output (JSON out).

A request is `{contents: [{role?, parts: [{text} | {inlineData: {mimeType, data}}]}],
generationConfig?}` (the REST API takes `inline_data`/`mime_type` too). Image parts must be real
images of a media type Gemini reads, or it is Google's 400 INVALID_ARGUMENT. With
`generationConfig.responseMimeType: application/json` the answer is text: JSON of the
`responseSchema` asked for (this stub knows the edit analysis's `{edits, preserve,
improved_prompt}`; `analysis` overrides the text it answers). Otherwise it answers `{candidates:
[{content: {parts: [{text}, {inlineData: {mimeType, data}}], role: model}, finishReason: STOP,
index: 0}], usageMetadata, modelVersion, responseId}` as the Gemini API does: the image made is
the size of the first image sent (32x32 without one). The key goes in `x-goog-api-key`. Errors are
Google's `{"error": {code, message, status, details?}}`: a wrong key is 400 INVALID_ARGUMENT with
reason API_KEY_INVALID (Google's real answer); 401/403 for the contract's modes; 429
RESOURCE_EXHAUSTED; 503 UNAVAILABLE; 500 INTERNAL; 400 INVALID_ARGUMENT for a bad request.
`blocked = True` answers a prompt blocked for SAFETY.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import uuid
from typing import Any

from PIL import Image

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png

KEY = "test-gemini-key"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
_ERRORS = {
    "unauthorized": (401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
    "forbidden": (403, "Method doesn't allow unregistered callers. Please use API Key.", "PERMISSION_DENIED"),
    "rate_limit": (429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
    "loading": (503, "The model is overloaded. Please try again later.", "UNAVAILABLE"),
    "server_error": (500, "An internal error has occurred.", "INTERNAL"),
    "bad_request": (400, "Request contains an invalid argument: unsupported aspect ratio.", "INVALID_ARGUMENT"),
}


def google_error(code: int, message: str, status: str) -> Reply:
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})


def request_parts(body: Any) -> tuple[list[str], list[tuple[str, bytes]]]:
    """A generateContent body's text parts and (media type, bytes) image parts, in order; ValueError
    naming what is not the API's shape."""
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list) or not body["contents"]:
        raise ValueError("contents is required")
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    for content in body["contents"]:
        for part in content.get("parts") or []:
            inline = part.get("inlineData") or part.get("inline_data")
            if "text" in part:
                texts.append(str(part["text"]))
            elif isinstance(inline, dict):
                mime = inline.get("mimeType") or inline.get("mime_type")
                if mime not in IMAGE_TYPES:
                    raise ValueError(f"Unsupported MIME type: {mime}")
                try:
                    images.append((mime, base64.b64decode(inline.get("data") or "", validate=True)))
                except binascii.Error as exc:
                    raise ValueError("Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES)") from exc
            else:
                raise ValueError("a part needs text or inlineData")
    return texts, images


class GeminiStub(ProviderStub):
    def on_reset(self) -> None:
        self.blocked = False
        self.analysis: str | None = None  # the JSON text a structured-output answer carries, when set

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        return google_error(*_ERRORS[mode])

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method != "POST" or not request.path.startswith("/v1beta/models/"):
            return google_error(404, "Not found", "NOT_FOUND")
        if request.headers.get("x-goog-api-key") != KEY:
            return Reply(
                400,
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com",
                            }
                        ],
                    }
                },
            )
        body = request.json()
        try:
            texts, images = request_parts(body)
            sizes = [_size(data) for _, data in images]
        except ValueError as exc:
            return google_error(400, str(exc), "INVALID_ARGUMENT")
        if mode == "malformed":
            return Reply(200, {"candidates": "none"})
        if self.blocked:
            return Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "responseId": uuid.uuid4().hex})
        config = body.get("generationConfig") or {}
        if config.get("responseMimeType") == "application/json":
            parts: list[dict[str, Any]] = [{"text": self.analysis or _analysis(config.get("responseSchema"), sizes)}]
        else:
            width, height = sizes[0] if sizes else (32, 32)
            image = base64.b64encode(make_png(width, height, (60, 160, 90))).decode()
            said = " ".join(texts)[:40]
            parts = [{"text": f"Here is {said}"}, {"inlineData": {"mimeType": "image/png", "data": image}}]
        return Reply(
            200,
            {
                "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
                "modelVersion": request.path.split("/")[-1].split(":")[0],
                "responseId": uuid.uuid4().hex,
            },
        )


def _size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return image.size
    except Exception as exc:
        raise ValueError(
            "Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        ) from exc


def _analysis(schema: Any, sizes: list[tuple[int, int]]) -> str:
    """The edit analysis as the schema asks for it, naming the image it saw."""
    seen = f"{sizes[0][0]}x{sizes[0][1]} image" if sizes else "no image"
    answer = {
        "edits": ["warmer lighting"],
        "preserve": ["the person's face", "the background"],
        "improved_prompt": f"make the lighting warmer, keep the face unchanged ({seen})",
    }
    wanted = (schema or {}).get("properties") or answer
    return json.dumps({name: answer[name] for name in wanted if name in answer})


def _check(stub: GeminiStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    body = sent.json()
    assert body["contents"][0]["parts"][0]["text"] == spec.prompt  # type: ignore[attr-defined]
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


def _check_edit(stub: GeminiStub, spec: object) -> None:
    """An edit: the instruction, then the image as inlineData (base64), asking for an image back."""
    body = stub.requests[-1].json()
    text, image = body["contents"][0]["parts"]
    assert text == {"text": spec.prompt}  # type: ignore[attr-defined]
    assert image["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(image["inlineData"]["data"]) == spec.init_image_png  # type: ignore[attr-defined]
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]


CASE = BackendCase(
    name="gemini",
    stub=GeminiStub,
    env={"GEMINI_API_KEY": KEY},
    refusal_words="invalid argument",
    check_request=_check,
    check_edit=_check_edit,
)
