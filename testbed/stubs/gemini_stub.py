"""A local Gemini API for image generation: `POST /v1beta/models/{model}:generateContent`.

Answers `{candidates: [{content: {parts: [{text}, {inlineData: {mimeType, data}}], role: model},
finishReason: STOP, index: 0}], usageMetadata, modelVersion, responseId}` as the Gemini API does,
with the key in `x-goog-api-key`. Errors are Google's `{"error": {code, message, status,
details?}}`: a wrong key is 400 INVALID_ARGUMENT with reason API_KEY_INVALID (Google's real
answer); 401/403 for the contract's modes; 429 RESOURCE_EXHAUSTED; 503 UNAVAILABLE; 500 INTERNAL;
400 INVALID_ARGUMENT for a bad request. `blocked = True` answers a prompt blocked for SAFETY.
"""

from __future__ import annotations

import base64
import uuid

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png

KEY = "test-gemini-key"
_ERRORS = {
    "unauthorized": (401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
    "forbidden": (403, "Method doesn't allow unregistered callers. Please use API Key.", "PERMISSION_DENIED"),
    "rate_limit": (429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
    "loading": (503, "The model is overloaded. Please try again later.", "UNAVAILABLE"),
    "server_error": (500, "An internal error has occurred.", "INTERNAL"),
    "bad_request": (400, "Request contains an invalid argument: unsupported aspect ratio.", "INVALID_ARGUMENT"),
}


class GeminiStub(ProviderStub):
    def on_reset(self) -> None:
        self.blocked = False

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        code, message, status = _ERRORS[mode]
        return Reply(code, {"error": {"code": code, "message": message, "status": status}})

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method != "POST" or not request.path.startswith("/v1beta/models/"):
            return Reply(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
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
        text = body["contents"][0]["parts"][0]["text"]
        if mode == "malformed":
            return Reply(200, {"candidates": "none"})
        if self.blocked:
            return Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "responseId": uuid.uuid4().hex})
        image = base64.b64encode(make_png(32, 32)).decode()
        parts = [{"text": f"Here is {text[:40]}"}, {"inlineData": {"mimeType": "image/png", "data": image}}]
        return Reply(
            200,
            {
                "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
                "modelVersion": request.path.split("/")[-1].split(":")[0],
                "responseId": uuid.uuid4().hex,
            },
        )


def _check(stub: GeminiStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    body = sent.json()
    assert body["contents"][0]["parts"][0]["text"] == spec.prompt  # type: ignore[attr-defined]
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


CASE = BackendCase(
    name="gemini",
    stub=GeminiStub,
    env={"GEMINI_API_KEY": KEY},
    refusal_words="invalid argument",
    check_request=_check,
)
