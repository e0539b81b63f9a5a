"""Hugging Face Inference Providers through `huggingface_hub`'s `AsyncInferenceClient.text_to_image`.

The client posts `{"inputs": prompt, "parameters": {negative_prompt, height, width,
num_inference_steps, guidance_scale, seed}}` to `{base_url}/models/{model}` (the router's
hf-inference route by default, `https://router.huggingface.co/hf-inference/models/...`) with the
token as a Bearer header, and answers the image bytes. Its HTTP errors (`HfHubHTTPError`, carrying
the response) go through the same classification and bounded retries as every other provider;
a 503 "Model ... is currently loading" also says how long to wait in `estimated_time`, honoured
like Retry-After.
"""

from __future__ import annotations

import io
from typing import Any

import httpx

from serve_app.backends.base import check_pixels
from serve_app.backends.cloud import CloudBackend, Made
from serve_app.backends.http import Retryable
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec


def estimated_time(response: Any) -> float | None:
    """Hugging Face's `estimated_time` (seconds until a loading model is ready), when the body has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get("estimated_time") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


DEFAULTS = cloud_config(
    "https://router.huggingface.co/hf-inference", "stabilityai/stable-diffusion-xl-base-1.0", "HF_TOKEN", 10, 0.0
)


@register_backend("huggingface", defaults=DEFAULTS)
class HuggingFaceBackend(CloudBackend):
    label = "Hugging Face"
    honoured = frozenset({"negative_prompt", "seed", "num_inference_steps", "guidance_scale"})

    _client: Any = None  # huggingface_hub's AsyncInferenceClient, made on first use
    _client_token: str | None = None

    def retry_hint(self, response: httpx.Response) -> float | None:
        return estimated_time(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await super().aclose()

    @property
    def endpoint(self) -> str:
        return f"{self.cfg.base_url.rstrip('/')}/models/{self.cfg.model}"

    async def _make(self, spec: GenerationSpec) -> Made:
        from huggingface_hub import AsyncInferenceClient
        from huggingface_hub.errors import HfHubHTTPError
        from PIL import UnidentifiedImageError

        token = self.api_key
        if self._client is None or self._client_token != token:  # one client per token: its pool stays warm
            if self._client is not None:
                await self._client.close()
            self._client = AsyncInferenceClient(base_url=self.endpoint, api_key=token, timeout=self.cfg.timeout_s)
            self._client_token = token
        client = self._client

        async def attempt() -> Any:
            await self.http.limiter.acquire()
            self.http.attempts += 1
            try:
                return await client.text_to_image(
                    spec.prompt,
                    negative_prompt=spec.negative_prompt or None,
                    height=spec.height,
                    width=spec.width,
                    num_inference_steps=spec.num_inference_steps,
                    guidance_scale=spec.guidance_scale,
                    seed=spec.seed,
                    extra_body=dict(self.cfg.options) or None,
                )
            except HfHubHTTPError as exc:
                if exc.response is None:
                    said = self.http.redact(str(exc))
                    raise UpstreamError(f"Hugging Face failed: {said}"[:300], error_code="UPSTREAM_ERROR") from exc
                self.http.raise_for_status(exc.response)
                raise  # pragma: no cover - raise_for_status always raises for an error status
            except (UnidentifiedImageError, ValueError) as exc:  # an answer that is not an image
                raise UpstreamError(
                    "Hugging Face answered with bytes that are not an image.", error_code="UPSTREAM_BAD_RESPONSE"
                ) from exc
            except Exception as exc:  # the connection: never opened, reset, timed out (httpx2's errors)
                error = UpstreamError(
                    f"Hugging Face is unreachable or slow ({type(exc).__name__}).", error_code="UPSTREAM_ERROR"
                )
                if "Connect" in type(exc).__name__:  # the request never reached Hugging Face: safe to repeat
                    raise Retryable(error) from exc
                raise error from exc

        image = await self.http.with_retries(attempt, self.endpoint)
        check_pixels(image.size, self.label, self.cfg.max_image_pixels)  # the client read only the header yet
        out = io.BytesIO()
        image.save(out, format="PNG")
        return Made(out.getvalue(), seed=spec.seed)
