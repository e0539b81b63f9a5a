"""Hugging Face Inference Providers, text-to-image, through Hugging Face's router with an HF token.

`provider` (backends.huggingface.provider) picks who runs the model; each is reached at
`{base_url}/{provider}/...` (base_url: the router, https://router.huggingface.co), with the token as
a Bearer header, on the route and payload huggingface_hub's provider helpers define
(`huggingface_hub/inference/_providers/`, huggingface_hub 2.4):

- `hf-inference` (the default): `huggingface_hub`'s `AsyncInferenceClient.text_to_image` posts
  `{"inputs": prompt, "parameters": {negative_prompt, height, width, num_inference_steps,
  guidance_scale, seed}}` to `/hf-inference/models/{model}` and answers the image bytes; a 503
  "Model ... is currently loading" says how long to wait in `estimated_time`, honoured like
  Retry-After.
- `fal-ai`: `POST /fal-ai/{provider id}` with `{prompt, negative_prompt, num_inference_steps,
  guidance_scale, seed, image_size: {width, height}}`; the answer's `images[0].url` is downloaded.
- `together`: `POST /together/v1/images/generations` with `{prompt, response_format: "base64",
  negative_prompt, height, width, steps, guidance_scale, seed, model}`; the image is
  `data[0].b64_json`.
- `nscale`: `POST /nscale/v1/images/generations` with `{response_format: "b64_json", prompt, model,
  negative_prompt, guidance_scale, seed, size: "WxH"}` (no steps); `data[0].b64_json`.
- `replicate`: `POST /replicate/v1/models/{provider id}/predictions` (`/v1/predictions` with
  `version` for an `owner/name:version` id), `Prefer: wait`, `{input: {prompt, ...}}`; the
  answer's `output` URL (or first URL) is downloaded.

A provider other than hf-inference knows the model by its own id: the Hub says which
(`GET {hub_url}/api/models/{model}?expand=inferenceProviderMapping`, as huggingface_hub asks),
once per model; a model the provider does not serve for text-to-image is BACKEND_NOT_CONFIGURED,
so a chain goes on to its next backend. Every HTTP error goes through the same classification and
bounded retries as every other provider.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

import httpx

from serve_app.backends.base import BackendNotConfigured, BackendStatus, check_pixels
from serve_app.backends.cloud import CloudBackend, Made
from serve_app.backends.http import Retryable, b64_image, bad_response
from serve_app.backends.provider import CloudBackendConfig, cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec

HUB_URL = "https://huggingface.co"
ROUTER_URL = "https://router.huggingface.co"
TASK = "text-to-image"


def estimated_time(response: Any) -> float | None:
    """Hugging Face's `estimated_time` (seconds until a loading model is ready), when the body has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get("estimated_time") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def provider_id(mapping: Any, provider: str) -> str | None:
    """The model's id at `provider` from the Hub's `inferenceProviderMapping` (a dict by provider, or
    a list of entries naming theirs), for text-to-image and not in error; None when it has none."""
    entries = (
        [{**value, "provider": name} for name, value in mapping.items() if isinstance(value, dict)]
        if isinstance(mapping, dict)
        else [entry for entry in mapping if isinstance(entry, dict)]
        if isinstance(mapping, list)
        else []
    )
    for entry in entries:
        if entry.get("provider") == provider and entry.get("task") == TASK and entry.get("status") != "error":
            found = entry.get("providerId")
            return found if isinstance(found, str) and found else None
    return None


def _parameters(spec: GenerationSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The text-to-image parameters huggingface_hub sends, none-valued ones left out."""
    sent = {
        "negative_prompt": spec.negative_prompt or None,
        "height": spec.height,
        "width": spec.width,
        "num_inference_steps": spec.num_inference_steps,
        "guidance_scale": spec.guidance_scale,
        "seed": spec.seed,
        **options,
    }
    return {name: value for name, value in sent.items() if value is not None}


def provider_request(provider: str, model: str, prompt: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(route below the router, JSON body) of a text-to-image request to `provider` for its model id
    `model`, as huggingface_hub's helper for that provider builds it."""
    params = dict(params)
    if provider == "fal-ai":
        if "width" in params and "height" in params:
            params["image_size"] = {"width": params.pop("width"), "height": params.pop("height")}
        return f"/fal-ai/{model}", {"prompt": prompt, **params}
    if provider == "together":
        if "num_inference_steps" in params:
            params["steps"] = params.pop("num_inference_steps")
        return "/together/v1/images/generations", {
            "prompt": prompt,
            "response_format": "base64",
            **params,
            "model": model,
        }
    if provider == "nscale":
        if "width" in params and "height" in params:
            params["size"] = f"{params.pop('width')}x{params.pop('height')}"
        params.pop("num_inference_steps", None)
        return "/nscale/v1/images/generations", {
            "response_format": "b64_json",
            "prompt": prompt,
            "model": model,
            **params,
        }
    if provider == "replicate":
        body: dict[str, Any] = {"input": {"prompt": prompt, **params}}
        if ":" in model:
            body["version"] = model.split(":", 1)[1]
            return "/replicate/v1/predictions", body
        return f"/replicate/v1/models/{model}/predictions", body
    raise ValueError(f"no text-to-image route for provider {provider!r}")


#: What each provider honours of a spec (nscale takes no step count).
HONOURED: dict[str, frozenset[str]] = {
    "nscale": frozenset({"negative_prompt", "seed", "guidance_scale"}),
}

DEFAULTS = cloud_config(ROUTER_URL, "stabilityai/stable-diffusion-xl-base-1.0", "HF_TOKEN", 10, 0.0)


@register_backend("huggingface", defaults=DEFAULTS)
class HuggingFaceBackend(CloudBackend):
    label = "Hugging Face"
    honoured = frozenset({"negative_prompt", "seed", "num_inference_steps", "guidance_scale"})

    _client: Any = None  # huggingface_hub's AsyncInferenceClient (hf-inference), made on first use
    _client_token: str | None = None

    def __init__(self, cfg: CloudBackendConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.honoured = HONOURED.get(self.provider, type(self).honoured)
        self._provider_ids: dict[str, str] = {}  # model -> its id at the provider (the Hub's mapping)

    @property
    def provider(self) -> str:
        return self.cfg.provider or "hf-inference"

    @property
    def router(self) -> str:
        """The router's root (a base_url that still names the hf-inference route, the old default, works too)."""
        return self.cfg.base_url.rstrip("/").removesuffix("/hf-inference")

    def status(self) -> BackendStatus:
        return super().status().model_copy(update={"provider": self.provider})

    def retry_hint(self, response: httpx.Response) -> float | None:
        return estimated_time(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await super().aclose()

    @property
    def endpoint(self) -> str:
        return f"{self.router}/hf-inference/models/{self.cfg.model}"

    async def _make(self, spec: GenerationSpec) -> Made:
        if self.provider == "hf-inference":
            return await self._hf_inference(spec)
        model = await self._provider_id(self.cfg.model)
        route, body = provider_request(self.provider, model, spec.prompt, _parameters(spec, dict(self.cfg.options)))
        headers = {"Prefer": "wait"} if self.provider == "replicate" else None
        answer = await self.http.json("POST", self.router + route, json=body, headers=headers)
        return Made(await self._image(answer), seed=spec.seed)

    async def _image(self, answer: Any) -> bytes:
        """The image bytes of a provider's answer: inline base64, or downloaded from the URL it gives."""
        if self.provider in ("together", "nscale"):
            return b64_image(answer, self.label)
        try:
            if self.provider == "fal-ai":
                url = answer["images"][0]["url"]
            else:  # replicate: output is a URL or a list of them; null when not done within the wait
                output = answer["output"]
                if output is None:
                    raise UpstreamError(
                        f"Hugging Face ({self.provider}) made no image within the wait (status "
                        f"{str(answer.get('status'))[:40]}).",
                        error_code="UPSTREAM_ERROR",
                    )
                url = output if isinstance(output, str) else output[0]
        except (KeyError, IndexError, TypeError) as exc:
            raise bad_response(self.label, "a body without an image URL") from exc
        if not isinstance(url, str):
            raise bad_response(self.label, "a body without an image URL")
        return await self.http.download(url)

    async def _provider_id(self, model: str) -> str:
        """The model's id at the provider, from the Hub's inferenceProviderMapping (once per model)."""
        if model not in self._provider_ids:
            hub = (self.cfg.hub_url or HUB_URL).rstrip("/")
            info = await self.http.json(
                "GET", f"{hub}/api/models/{quote(model, safe='/')}", params={"expand": "inferenceProviderMapping"}
            )
            found = provider_id(info.get("inferenceProviderMapping") if isinstance(info, dict) else None, self.provider)
            if found is None:
                raise BackendNotConfigured(
                    f"Hugging Face's provider {self.provider} does not serve {model} for {TASK} (the Hub's "
                    "inferenceProviderMapping); choose another backends.huggingface.provider or model."
                )
            self._provider_ids[model] = found
        return self._provider_ids[model]

    async def _hf_inference(self, spec: GenerationSpec) -> Made:
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
