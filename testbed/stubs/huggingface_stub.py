"""A local Hugging Face Inference Providers endpoint for text-to-image (hf-inference route).

`POST /hf-inference/models/{model id}` with `{"inputs": prompt, "parameters": {...}}` and
`Authorization: Bearer <token>` answers the image bytes (JPEG, as the service does). Errors are
Hugging Face's `{"error": "..."}` bodies: 401 invalid credentials, 403 insufficient permissions,
429 the free tier's rate limit, 503 "Model ... is currently loading" with `estimated_time`,
400 input validation, 500.
"""

from __future__ import annotations

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_jpeg

TOKEN = "hf_test_token"
PREFIX = "/hf-inference/models/"


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

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.method != "POST" or not request.path.startswith(PREFIX):
            return Reply(404, {"error": "Not Found"})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.error_reply("unauthorized", request)
        body = request.json()
        if not isinstance(body, dict) or not str(body.get("inputs") or "").strip():
            return self.error_reply("bad_request", request)
        if mode == "malformed":
            return Reply(200, {"generated_text": "not an image"})
        params = body.get("parameters") or {}
        width, height = int(params.get("width") or 64), int(params.get("height") or 64)
        return Reply(200, make_jpeg(min(width, 128), min(height, 128)), {"Content-Type": "image/jpeg"})


def _check(stub: HuggingFaceStub, spec: object) -> None:
    sent = stub.requests[-1]
    assert sent.path == PREFIX + "stabilityai/stable-diffusion-xl-base-1.0"
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
    api_path="/hf-inference",
    check_request=_check,
)
