"""A local Hugging Face router (Inference Providers, text-to-image) and the Hub's model API.

Routes, as huggingface_hub 2.4's provider helpers call them through the router with an HF token
(`Authorization: Bearer hf_...`):

- `POST /hf-inference/models/{model id}` with `{"inputs": prompt, "parameters": {...}}` answers the
  image bytes (JPEG, as the service does).
- `POST /fal-ai/{fal model id}` with `{prompt, ..., image_size: {width, height}}` answers fal's
  `{"images": [{"url", "width", "height", "content_type"}], "timings", "seed", "has_nsfw_concepts",
  "prompt"}`; the image is served at `/fal-files/...` (fal's CDN; no auth).
- `POST /together/v1/images/generations` with `{prompt, response_format: "base64", steps, model,
  ...}` answers `{"id", "model", "object": "list", "data": [{"index": 0, "b64_json"}]}`.
- `POST /nscale/v1/images/generations` with `{response_format: "b64_json", prompt, model, size:
  "WxH", ...}` answers `{"created", "data": [{"b64_json"}]}`.
- `POST /replicate/v1/models/{owner}/{name}/predictions` (or `/replicate/v1/predictions` with a
  `version`) with `Prefer: wait` and `{input: {prompt, ...}}` answers the finished prediction,
  `output` a list of file URLs (served at `/replicate-files/...`); without `Prefer: wait` a
  prediction that has just started (`status: starting`, `output: null`).
- `GET /api/models/{model id}?expand=inferenceProviderMapping` answers the Hub's model info with
  its `inferenceProviderMapping` (`{provider: {status, providerId, task}}`) from `MAPPING`.

Errors are Hugging Face's `{"error": "..."}` bodies: 401 invalid credentials, 403 insufficient
permissions, 429 the free tier's rate limit, 503 "Model ... is currently loading" with
`estimated_time`, 400 input validation, 500. A route of a provider that does not serve the model
(not in `MAPPING`) is a 404, as the router answers.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_jpeg, make_png

TOKEN = "hf_test_token"
PREFIX = "/hf-inference/models/"
FLUX = "black-forest-labs/FLUX.1-dev"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"

#: The Hub's inferenceProviderMapping of the models the stub knows: provider -> the model's id there
#: (text-to-image, live). FLUX.1-dev is not served by nscale here, so that path is exercised too.
MAPPING: dict[str, dict[str, str]] = {
    FLUX: {
        "hf-inference": FLUX,
        "fal-ai": "fal-ai/flux/dev",
        "together": "black-forest-labs/FLUX.1-dev",
        "replicate": "black-forest-labs/flux-dev",
    },
    SDXL: {
        "hf-inference": SDXL,
        "fal-ai": "fal-ai/fast-sdxl",
        "nscale": "stabilityai/stable-diffusion-xl-base-1.0",
        "replicate": "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
    },
}

#: Each selectable provider's text-to-image route below the router (replicate's without a version).
ROUTES = {
    "fal-ai": "/fal-ai/",
    "together": "/together/v1/images/generations",
    "nscale": "/nscale/v1/images/generations",
    "replicate": "/replicate/v1/",
}


def served(provider: str, provider_model: str) -> bool:
    return any(ids.get(provider) == provider_model for ids in MAPPING.values())


class HuggingFaceStub(ProviderStub):
    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        model = request.path.removeprefix(PREFIX)
        bodies = {
            "unauthorized": (401, {"error": "Invalid credentials in Authorization header"}),
            "forbidden": (
                403,
                {
                    "error": "This authentication method does not have sufficient permissions to call "
                    "Inference Providers"
                },
            ),
            "rate_limit": (
                429,
                {"error": "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO."},
            ),
            "loading": (503, {"error": f"Model {model} is currently loading", "estimated_time": 20.0}),
            "server_error": (500, {"error": "Internal Server Error"}),
            "bad_request": (
                400,
                {"error": "Input validation error: `inputs` must be a non-empty prompt", "error_type": "validation"},
            ),
        }
        status, body = bodies[mode]
        return Reply(status, body)

    def exempt(self, request: StubRequest) -> bool:
        return request.path.startswith(("/fal-files/", "/replicate-files/", "/api/models/"))

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method == "GET" and request.path.startswith(("/fal-files/", "/replicate-files/")):
            return Reply(200, make_png(32, 32), {"Content-Type": "image/png"})
        if request.method == "GET" and request.path.startswith("/api/models/"):
            return self._model_info(request)
        if request.method != "POST":
            return Reply(404, {"error": "Not Found"})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.error_reply("unauthorized", request)
        body = request.json()
        if request.path.startswith(PREFIX):
            if not isinstance(body, dict) or not str(body.get("inputs") or "").strip():
                return self.error_reply("bad_request", request)
            if mode == "malformed":
                return Reply(200, {"generated_text": "not an image"})
            params = body.get("parameters") or {}
            width, height = int(params.get("width") or 64), int(params.get("height") or 64)
            return Reply(200, make_jpeg(min(width, 128), min(height, 128)), {"Content-Type": "image/jpeg"})
        if not isinstance(body, dict):
            return self.error_reply("bad_request", request)
        for provider, route in ROUTES.items():
            if request.path.startswith(route):
                return self._provider(provider, request, body, mode)
        return Reply(404, {"error": "Not Found"})

    def _model_info(self, request: StubRequest) -> Reply:
        model = request.path.removeprefix("/api/models/")
        if model not in MAPPING:
            return Reply(404, {"error": "Repository not found"})
        info: dict[str, Any] = {"_id": uuid.uuid4().hex[:24], "id": model}
        if "inferenceProviderMapping" in request.query.get("expand", []):
            info["inferenceProviderMapping"] = {
                provider: {"status": "live", "providerId": provider_id, "task": "text-to-image"}
                for provider, provider_id in MAPPING[model].items()
            }
        return Reply(200, info)

    def _provider(self, provider: str, request: StubRequest, body: dict[str, Any], mode: str) -> Reply:
        prompt = body.get("prompt") if provider != "replicate" else (body.get("input") or {}).get("prompt")
        if not str(prompt or "").strip():
            return self.error_reply("bad_request", request)
        if provider == "fal-ai":
            model = request.path.removeprefix("/fal-ai/")
        elif provider == "replicate" and request.path == "/replicate/v1/predictions":  # owner/name:version
            version = str(body.get("version"))
            model = next((i for ids in MAPPING.values() for i in ids.values() if i.endswith(":" + version)), version)
        elif provider == "replicate":
            model = request.path.removeprefix("/replicate/v1/models/").removesuffix("/predictions")
        else:
            model = str(body.get("model"))
        if not served(provider, model):
            return Reply(404, {"error": f"Model {model} is not supported by provider {provider}"})
        if mode == "malformed":
            return Reply(200, {"detail": "not an image answer"})
        png = base64.b64encode(make_png(32, 32)).decode()
        if provider == "fal-ai":
            size = body.get("image_size") or {}
            url = f"{self.base_url}/fal-files/{uuid.uuid4().hex}.png"
            return Reply(
                200,
                {
                    "images": [
                        {
                            "url": url,
                            "width": size.get("width"),
                            "height": size.get("height"),
                            "content_type": "image/png",
                        }
                    ],
                    "timings": {"inference": 0.01},
                    "seed": body.get("seed"),
                    "has_nsfw_concepts": [False],
                    "prompt": prompt,
                },
            )
        if provider == "together":
            return Reply(
                200, {"id": uuid.uuid4().hex, "model": model, "object": "list", "data": [{"index": 0, "b64_json": png}]}
            )
        if provider == "nscale":
            return Reply(200, {"created": int(time.time()), "data": [{"b64_json": png}]})
        prediction_id = uuid.uuid4().hex[:26]
        waited = "wait" in request.headers.get("prefer", "")  # without Prefer: wait, a prediction just started
        return Reply(
            201,
            {
                "id": prediction_id,
                "model": model,
                "version": "hidden",
                "input": body.get("input"),
                "status": "succeeded" if waited else "starting",
                "output": [f"{self.base_url}/replicate-files/{prediction_id}/out-0.png"] if waited else None,
                "urls": {"get": f"https://api.replicate.com/v1/predictions/{prediction_id}"},
            },
        )


def _check(stub: HuggingFaceStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.path == PREFIX + SDXL
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    body = sent.json()
    assert body["inputs"] == spec.prompt  # type: ignore[attr-defined]
    params = body["parameters"]
    assert params["negative_prompt"] == spec.negative_prompt and params["seed"] == spec.seed  # type: ignore[attr-defined]
    assert (params["width"], params["height"], params["num_inference_steps"]) == (512, 512, 20)


CASE = BackendCase(
    name="huggingface",
    stub=HuggingFaceStub,
    env={"HF_TOKEN": TOKEN},
    refusal_words="Input validation error",
    check_request=_check,
)
