"""Stability AI Stable Image (https://platform.stability.ai/docs/api-reference).

`POST {base_url}/v2beta/stable-image/generate/{model}` (`core` by default; `ultra`; `sd3` with a
`model` form field in `options`) as multipart/form-data: `prompt`, `negative_prompt`,
`aspect_ratio` (the nearest Stability offers), `seed`, `output_format=png`, with `Accept: image/*`
and `Authorization: Bearer`. The answer is the image bytes with `finish-reason` and `seed`
headers; `finish-reason: CONTENT_FILTERED` means the image was filtered (UPSTREAM_REJECTED).
Errors are `{"id", "name", "errors": [...]}`; a 403 whose `name` is `content_moderation` is a
refusal of this prompt, not a bad key.

Stability has no instruction-edit endpoint; an edit (the edit chain, `stability:sd3` or
`stability:ultra`) is their image-to-image: the same route with the `image` file part and
`strength` (options' `strength`, 0.6 by default: how far from the image), `mode=image-to-image`
for sd3, and no `aspect_ratio` (the image's). `core` takes no image: EDIT_NOT_SUPPORTED.
"""

from __future__ import annotations

from typing import Any

import httpx

from serve_app.backends.base import EditNotSupported
from serve_app.backends.cloud import COMMON_ASPECT_RATIOS, CloudBackend, Made, nearest_aspect_ratio
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import AppError, UpstreamError
from serve_app.stages import GenerationSpec

DEFAULT_EDIT_STRENGTH = 0.6  # image-to-image: 0 keeps the image, 1 ignores it


def _name(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("name") if isinstance(body, dict) else None


DEFAULTS = cloud_config("https://api.stability.ai", "core", "STABILITY_API_KEY", 900, 0.03)


@register_backend("stability", defaults=DEFAULTS, edits=True)
class StabilityBackend(CloudBackend):
    label = "Stability AI"
    honoured = frozenset({"negative_prompt", "seed"})

    def honours(self, spec: GenerationSpec) -> set[str]:
        return set(self.honoured) | ({"init_image"} if spec.init_image_png is not None else set())

    def classify_refusal(self, response: httpx.Response) -> AppError | None:
        if response.status_code == 403 and _name(response) == "content_moderation":
            return UpstreamError(
                f"Stability AI refused the prompt (content moderation: {self.http.said(response)}).",
                error_code="UPSTREAM_REJECTED",
            )
        return None

    async def _make(self, spec: GenerationSpec) -> Made:
        fields: dict[str, Any] = {
            "prompt": spec.prompt[:10000],
            "seed": str(spec.seed % 4294967295),
            "output_format": "png",
            **{key: str(value) for key, value in self.cfg.options.items()},
        }
        if spec.negative_prompt:
            fields["negative_prompt"] = spec.negative_prompt[:10000]
        if spec.init_image_png is None:
            fields["aspect_ratio"] = nearest_aspect_ratio(spec.width, spec.height, COMMON_ASPECT_RATIOS)
        else:
            if self.cfg.model not in ("sd3", "ultra"):
                raise EditNotSupported(
                    f"Stability AI's {self.cfg.model} takes no image; edits need stability:sd3 or stability:ultra."
                )
            fields.setdefault("strength", str(DEFAULT_EDIT_STRENGTH))
            if self.cfg.model == "sd3":
                fields["mode"] = "image-to-image"
        # httpx sends multipart only with a files part: the fields go as (None, value) parts.
        parts: dict[str, Any] = {key: (None, value) for key, value in fields.items()}
        if spec.init_image_png is not None:
            parts["image"] = ("image.png", spec.init_image_png, "image/png")
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
