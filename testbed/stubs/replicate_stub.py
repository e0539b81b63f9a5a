"""A local Replicate HTTP API: create a prediction, poll it, cancel it, download its output.

`POST /v1/models/{owner}/{name}/predictions` (or `POST /v1/predictions` with `version`) answers
201 with the prediction object (`id`, `model`, `version`, `input`, `status: starting`, `urls: {get,
cancel, stream}`, `created_at`); `GET /v1/predictions/{id}` advances it starting -> processing ->
succeeded (`output`: a list of file URLs this stub serves under `/replicate-files/`, a path no
failure rule touches, `metrics.predict_time`), or failed (`error`) under `fail_job`;
`POST /v1/predictions/{id}/cancel` marks it canceled. `hold = True` keeps predictions processing.
Errors are Replicate's problem JSON `{"title", "detail", "status"}`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png

TOKEN = "r8_test_token"
_ERRORS = {
    "unauthorized": (401, "Unauthenticated", "You did not pass a valid authentication token"),
    "forbidden": (403, "Forbidden", "You do not have permission to run this model"),
    "rate_limit": (429, "Request was throttled.", "Request was throttled. Expected available in 1 second."),
    "loading": (503, "Service Unavailable", "The service is temporarily unavailable"),
    "server_error": (500, "Internal Server Error", "Something went wrong"),
    "bad_request": (422, "Input validation failed", "- input.prompt: Does not match the model's schema"),
}


class ReplicateStub(ProviderStub):
    def on_reset(self) -> None:
        self.predictions: dict[str, dict[str, object]] = {}
        self.hold = False

    def exempt(self, request: StubRequest) -> bool:
        return request.path.startswith("/replicate-files/") or request.path.endswith("/cancel")

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        status, title, detail = _ERRORS[mode]
        return Reply(
            status, {"title": title, "detail": detail, "status": status}, {"Content-Type": "application/problem+json"}
        )

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.path.startswith("/replicate-files/"):
            return Reply(200, make_png(36, 36), {"Content-Type": "image/png"})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.error_reply("unauthorized", request)
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and parts[-1] == "predictions":
            return self._create(request, mode)
        if len(parts) >= 3 and parts[1] == "predictions":
            prediction = self.predictions.get(parts[2])
            if prediction is None:
                return Reply(404, {"title": "Not found", "detail": "Prediction not found", "status": 404})
            if request.method == "POST" and parts[-1] == "cancel":
                if prediction["status"] not in ("succeeded", "failed"):
                    prediction["status"] = "canceled"
                return Reply(200, prediction)
            return Reply(200, self._advance(prediction))
        return Reply(404, {"title": "Not found", "detail": "Not found", "status": 404})

    def _create(self, request: StubRequest, mode: str) -> Reply:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self.error_reply("bad_request", request)
        inputs = body["input"]
        # The model's input schema: GFPGAN takes `img` (a URI); the image models take a `prompt`.
        required = "img" if str(body.get("version", "")).startswith("0fbacf7a") or "img" in inputs else "prompt"
        if not inputs.get(required) or (required == "img" and not str(inputs["img"]).startswith(("data:", "http"))):
            return Reply(
                422,
                {"title": "Input validation failed", "detail": f"- input: {required} is required", "status": 422},
            )
        if mode == "malformed":
            return Reply(201, {"detail": "created"})
        prediction_id = uuid.uuid4().hex[:26]
        base = f"{self.base_url}/v1/predictions/{prediction_id}"
        model = "/".join(request.path.strip("/").split("/")[2:4]) if "/models/" in request.path else "custom"
        self.predictions[prediction_id] = prediction = {
            "id": prediction_id,
            "model": model,
            "version": body.get("version", "dp-official"),
            "input": body["input"],
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "created_at": datetime.now(UTC).isoformat(),
            "urls": {"get": base, "cancel": f"{base}/cancel", "stream": f"{base}/stream"},
            "_fail": mode == "fail_job",
        }
        return Reply(201, {k: v for k, v in prediction.items() if not k.startswith("_")})

    def _advance(self, prediction: dict[str, object]) -> dict[str, object]:
        if prediction["status"] == "starting":
            prediction["status"] = "processing"
        elif prediction["status"] == "processing" and not self.hold:
            if prediction["_fail"]:
                prediction.update(status="failed", error="CUDA out of memory. Tried to allocate 2.00 GiB")
            else:
                url = f"{self.base_url}/replicate-files/{prediction['id']}/out-0.png"
                prediction.update(status="succeeded", output=[url], metrics={"predict_time": 1.2})
        return {k: v for k, v in prediction.items() if not k.startswith("_")}


def _check(stub: ReplicateStub, spec: object) -> None:
    create = next(r for r in stub.requests if r.method == "POST" and r.path.endswith("/predictions"))
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    inputs = create.json()["input"]
    assert inputs["prompt"] == spec.prompt and inputs["seed"] == spec.seed and inputs["num_outputs"] == 1  # type: ignore[attr-defined]
    assert inputs["aspect_ratio"] == "1:1" and inputs["output_format"] == "png"
    assert any(r.method == "GET" and "/v1/predictions/" in r.path for r in stub.requests), "the prediction was polled"
    assert any(r.path.startswith("/replicate-files/") for r in stub.requests), "the output was downloaded"


CASE = BackendCase(
    name="replicate",
    stub=ReplicateStub,
    env={"REPLICATE_API_TOKEN": TOKEN},
    refusal_words="Does not match the model's schema",
    api_path="/v1",
    check_request=_check,
)
