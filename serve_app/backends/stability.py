"""Stability AI Stable Image (https://platform.stability.ai/docs/api-reference).

`POST {base_url}/v2beta/stable-image/generate/{model}` (`core` by default; `ultra`; `sd3` with a
`model` form field in `options`) as multipart/form-data: `prompt`, `negative_prompt`,
`aspect_ratio` (the nearest Stability offers), `seed`, `output_format=png`, with `Accept: image/*`
and `Authorization: Bearer`. The answer is the image bytes with `finish-reason` and `seed`
headers; `finish-reason: CONTENT_FILTERED` means the image was filtered (UPSTREAM_REJECTED).
Errors are `{"id", "name", "errors": [...]}`; a 403 whose `name` is `content_moderation` is a
refusal of this prompt, not a bad key.
"""

from __future__ import annotations

from typing import Any

import httpx

from serve_app.backends.cloud import CloudBackend, Made
from serve_app.backends.http import error_message
from serve_app.backends.kling import nearest_aspect_ratio
from serve_app.errors import AppError, UpstreamError
from serve_app.protocol import GenerationSpec

ASPECT_RATIOS = {
    "21:9": 21 / 9,
    "16:9": 16 / 9,
    "3:2": 3 / 2,
    "5:4": 5 / 4,
    "1:1": 1.0,
    "4:5": 4 / 5,
    "2:3": 2 / 3,
    "9:16": 9 / 16,
    "9:21": 9 / 21,
}


def _name(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("name") if isinstance(body, dict) else None


class StabilityBackend(CloudBackend):
    name = "stability"
    label = "Stability AI"
    honoured = frozenset({"negative_prompt", "seed"})

    def classify_refusal(self, response: httpx.Response) -> AppError | None:
        if response.status_code == 403 and _name(response) == "content_moderation":
            return UpstreamError(
                f"Stability AI refused the prompt (content moderation: {error_message(response)}).",
                error_code="UPSTREAM_REJECTED",
            )
        return None

    async def _make(self, spec: GenerationSpec) -> Made:
        fields: dict[str, Any] = {
            "prompt": spec.prompt[:10000],
            "aspect_ratio": nearest_aspect_ratio(spec.width, spec.height, ASPECT_RATIOS),
            "seed": str(spec.seed % 4294967295),
            "output_format": "png",
            **{key: str(value) for key, value in self.cfg.options.items()},
        }
        if spec.negative_prompt:
            fields["negative_prompt"] = spec.negative_prompt[:10000]
        # httpx sends multipart only with a files part: the fields go as (None, value) parts.
        parts = {key: (None, value) for key, value in fields.items()}
        response = await self.http.request(
            "POST",
            f"/v2beta/stable-image/generate/{self.cfg.model}",
            files=parts,
            headers={"Accept": "image/*"},
        )
        if response.headers.get("finish-reason") == "CONTENT_FILTERED":
            raise UpstreamError("Stability AI filtered the image (CONTENT_FILTERED).", error_code="UPSTREAM_REJECTED")
        seed = response.headers.get("seed")
        return Made(
            response.content,
            seed=int(seed) if seed and seed.isdigit() else None,
            provider_request_id=response.headers.get("x-request-id"),
        )
