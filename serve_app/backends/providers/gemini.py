"""Gemini image generation and editing (https://ai.google.dev/gemini-api/docs/image-generation).

`POST {base_url}/v1beta/models/{model}:generateContent` with the key in `x-goog-api-key` and
`{"contents": [{"role": "user", "parts": [{"text": prompt}, ...]}], "generationConfig":
{"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": ...}}}`. An edit (the
edit chain: a spec with an init image) sends the image as an `inlineData {mimeType, data
(base64)}` part after the instruction; a composition (the compose chain) sends every image, the
init image first. The image comes back as a part with `inlineData {mimeType, data (base64)}` in
`candidates[0].content.parts`. No image part means Gemini declined: `promptFeedback.blockReason`
or the candidate's `finishReason` (SAFETY, PROHIBITED_CONTENT, ...) says why (UPSTREAM_REJECTED).
Errors are Google's `{"error": {code, message, status}}`; an invalid key is a 400
INVALID_ARGUMENT whose details say API_KEY_INVALID, reported as a rejected key like a 401/403.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import httpx

from serve_app.backends.base import BackendAuthFailed, image_mime
from serve_app.backends.cloud import CloudBackend, Made, nearest_aspect_ratio
from serve_app.backends.http import bad_response
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import AppError, UpstreamError
from serve_app.stages import GenerationSpec

ASPECT_RATIOS = {
    "1:1": 1.0,
    "2:3": 2 / 3,
    "3:2": 3 / 2,
    "3:4": 3 / 4,
    "4:3": 4 / 3,
    "4:5": 4 / 5,
    "5:4": 5 / 4,
    "9:16": 9 / 16,
    "16:9": 16 / 9,
    "21:9": 21 / 9,
}
LABEL = "Gemini"


def invalid_key(response: httpx.Response) -> bool:
    """Google's way of saying the key is wrong: 400 INVALID_ARGUMENT with reason API_KEY_INVALID."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return False
    details = error.get("details") or []
    return any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details)


def inline_image(data: bytes) -> dict[str, Any]:
    """An image as a request part: `{"inlineData": {"mimeType", "data" (base64)}}`."""
    return {"inlineData": {"mimeType": image_mime(data), "data": base64.b64encode(data).decode("ascii")}}


def candidate_parts(answer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A generateContent answer's first candidate and its parts; UPSTREAM_REJECTED when the prompt
    was blocked, UPSTREAM_BAD_RESPONSE when the body is not the API's."""
    if not isinstance(answer, dict):
        raise bad_response(LABEL, "a body that is not an object")
    blocked = (answer.get("promptFeedback") or {}).get("blockReason")
    if blocked:
        raise UpstreamError(f"Gemini blocked the prompt ({blocked}).", error_code="UPSTREAM_REJECTED")
    candidates = answer.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise bad_response(LABEL, "a body without candidates")
    candidate = candidates[0] if isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    return candidate, [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


DEFAULTS = cloud_config(
    "https://generativelanguage.googleapis.com", "gemini-2.5-flash-image", "GEMINI_API_KEY", 10, 0.039
)


@register_backend("gemini", defaults=DEFAULTS, edits=True, composes=True)
class GeminiBackend(CloudBackend):
    label = LABEL
    honoured: frozenset[str] = frozenset()

    def honours(self, spec: GenerationSpec) -> set[str]:
        return {"init_image"} if spec.init_image_png is not None else set()

    def auth_headers(self) -> Mapping[str, str]:
        return {"x-goog-api-key": self.api_key}

    def classify_refusal(self, response: httpx.Response) -> AppError | None:
        if response.status_code == 400 and invalid_key(response):
            return BackendAuthFailed(
                f"Gemini rejected the API key ({self.http.said(response)}); check ${self.cfg.api_key_env}."
            )
        return None

    async def generate_content(self, parts: list[dict[str, Any]], generation_config: dict[str, Any]) -> Any:
        """One generateContent call of the configured model with one user turn of `parts`."""
        body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation_config}
        return await self.http.json("POST", f"/v1beta/models/{self.cfg.model}:generateContent", json=body)

    async def _make(self, spec: GenerationSpec) -> Made:
        images = [spec.init_image_png, *spec.reference_images_png] if spec.init_image_png is not None else []
        answer = await self.generate_content(
            [{"text": spec.prompt}, *(inline_image(image) for image in images)],
            {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": nearest_aspect_ratio(spec.width, spec.height, ASPECT_RATIOS)},
                **self.cfg.options,
            },
        )
        candidate, parts = candidate_parts(answer)
        for part in parts:
            inline = part.get("inlineData")
            if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("image/"):
                try:
                    data = base64.b64decode(inline.get("data") or "", validate=True)
                except binascii.Error as exc:
                    raise bad_response(self.label, "inline image data that is not base64") from exc
                return Made(data, provider_request_id=answer.get("responseId"))
        reason = candidate.get("finishReason") or "no image part"
        raise UpstreamError(f"Gemini made no image ({reason}).", error_code="UPSTREAM_REJECTED")
