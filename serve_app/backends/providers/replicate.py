"""Replicate predictions (https://replicate.com/docs/reference/http): create, poll, cancel.

An official model (`owner/name`) is run with `POST {base_url}/models/{owner}/{name}/predictions`;
a pinned version (`owner/name:version`) with `POST /predictions {"version": ...}`. The body is
`{"input": {prompt, aspect_ratio, seed, num_outputs: 1, output_format: png, ...options}}` with
`Authorization: Bearer`. The prediction is polled at `GET /predictions/{id}` (its `urls.get`)
until `status` is `succeeded` (`output`: a URL or a list of URLs, downloaded), `failed` (its
`error`) or `canceled`. Past `max_poll_s`, or when the task is cancelled here, the prediction is
cancelled at Replicate (`POST /predictions/{id}/cancel`), so nobody pays for an image no one
will read. Errors are problem JSON `{"title", "detail", "status"}`.

An edit (the edit chain; e.g. `replicate:timbrooks/instruct-pix2pix:<version>`) sends InstructPix2Pix's
inputs: `image` as a data URI, `prompt` (the instruction), `negative_prompt`, `num_inference_steps`,
`guidance_scale`, `image_guidance_scale`, `seed`, `num_outputs: 1`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from serve_app.backends.base import EditNotSupported
from serve_app.backends.cloud import COMMON_ASPECT_RATIOS, CloudBackend, Made, nearest_aspect_ratio
from serve_app.backends.http import bad_response
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec

DONE = ("succeeded", "failed", "canceled")


DEFAULTS = cloud_config(
    "https://api.replicate.com/v1", "black-forest-labs/flux-schnell", "REPLICATE_API_TOKEN", 600, 0.003
)


@register_backend("replicate", defaults=DEFAULTS, edits=True)
class ReplicateBackend(CloudBackend):
    label = "Replicate"
    honoured = frozenset({"seed"})

    def honours(self, spec: GenerationSpec) -> set[str]:
        if spec.is_edit:
            return {
                "seed",
                "negative_prompt",
                "num_inference_steps",
                "guidance_scale",
                "init_image",
                "image_guidance_scale",
            }
        return set(self.honoured)

    @staticmethod
    def _edit_inputs(spec: GenerationSpec) -> dict[str, Any]:
        if not spec.is_edit:
            raise EditNotSupported("Replicate edits are InstructPix2Pix edits: an image and image_guidance_scale.")
        return {
            "image": "data:image/png;base64," + base64.b64encode(spec.init_image_png or b"").decode("ascii"),
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
            "num_inference_steps": spec.num_inference_steps,
            "guidance_scale": spec.guidance_scale,
            "image_guidance_scale": spec.image_guidance_scale,
        }

    async def _make(self, spec: GenerationSpec) -> Made:
        shape: dict[str, Any] = (
            self._edit_inputs(spec)
            if spec.init_image_png is not None
            else {
                "prompt": spec.prompt,
                "aspect_ratio": nearest_aspect_ratio(spec.width, spec.height, COMMON_ASPECT_RATIOS),
                "output_format": "png",
            }
        )
        inputs: dict[str, Any] = {**shape, "seed": spec.seed % 2**31, "num_outputs": 1, **self.cfg.options}
        return await self.predict(inputs)

    async def predict(self, inputs: dict[str, Any]) -> Made:
        """Run the configured model on `inputs`: create the prediction, poll it to its end, download
        its output (cancelling it at Replicate when it times out or the caller goes away)."""
        model, _, version = self.cfg.model.partition(":")
        if version:
            prediction = await self.http.json("POST", "/predictions", json={"version": version, "input": inputs})
        else:
            prediction = await self.http.json("POST", f"/models/{model}/predictions", json={"input": inputs})
        if not isinstance(prediction, dict) or not prediction.get("id"):
            raise bad_response(self.label, "a prediction without an id")
        prediction_id = str(prediction["id"])
        try:
            prediction = await self._wait(prediction)
        except (asyncio.CancelledError, UpstreamError) as exc:
            if not isinstance(exc, UpstreamError) or exc.error_code == "UPSTREAM_TIMEOUT":
                await self._cancel(prediction_id)
            raise
        status = prediction.get("status")
        if status != "succeeded":
            reason = self.http.redact(str(prediction.get("error") or status))
            raise UpstreamError(
                f"Replicate prediction {prediction_id} {status}: {reason}"[:300], error_code="UPSTREAM_ERROR"
            )
        output = prediction.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad_response(self.label, "a finished prediction without an output URL")
        return Made(await self.http.download(url), provider_request_id=prediction_id, seed=inputs.get("seed"))

    async def _wait(self, prediction: dict[str, Any]) -> dict[str, Any]:
        deadline = self._clock() + self.cfg.max_poll_s
        while prediction.get("status") not in DONE:
            if self._clock() >= deadline:
                raise UpstreamError(
                    f"Replicate prediction {prediction['id']} was not done after {self.cfg.max_poll_s:g} s; cancelled.",
                    error_code="UPSTREAM_TIMEOUT",
                )
            await self._sleep(self.cfg.poll_interval_s)
            polled = await self.http.json("GET", f"/predictions/{prediction['id']}")
            if not isinstance(polled, dict) or "status" not in polled:
                raise bad_response(self.label, "a prediction without a status")
            prediction = polled
        return prediction

    async def _cancel(self, prediction_id: str) -> None:
        """Best effort: a cancel that fails is logged, never raised over the original error."""
        try:
            await asyncio.shield(self.http.request("POST", f"/predictions/{prediction_id}/cancel"))
        except Exception as exc:  # noqa: BLE001 - the prediction's own outcome is what the caller needs
            import logging

            logging.getLogger(__name__).warning("cancelling Replicate prediction %s failed: %s", prediction_id, exc)
