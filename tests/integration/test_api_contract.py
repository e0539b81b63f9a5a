"""The v1 HTTP contract over real HTTP: health, info, docs, and every error case of SPEC.md section 4."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> httpx.Client:
    return serve_app.client()


def test_healthcheck_reports_every_deployment(client: httpx.Client) -> None:
    response = client.get("/healthcheck")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    deployments = {"task_runner", "captioner", "desk_classifier", "generator", "shopping", "editor", "translator"}
    assert set(body["deployments"]) == deployments
    # serve_config.yaml autoscales the Editor and the Translator from zero: ready while none runs, and it says so.
    for name in ("editor", "translator"):
        state = body["deployments"].pop(name)
        assert state == "ready" or state.startswith(("ready (scaled to zero", "ready (starting from zero")), state
    assert all(state == "ready" for state in body["deployments"].values())
    assert body["storage"] == "ok" and body["task_store"] == "ok"


def test_info_describes_the_preset(client: httpx.Client) -> None:
    body = client.get("/info").json()
    assert body["preset"] == "tiny-always-desk"
    assert body["models"]["generator"]["model_id"] == "tiny"
    assert {lora["name"] for lora in body["loras"]} == {"cozy-wood", "neon-minimal", "pastel-studio"}
    assert body["defaults"]["height"] == 64
    assert body["limits"]["max_side"] == 512
    assert body["backends"]["storage"] == "local" and body["backends"]["shopping"] == "catalog"
    assert body["backends"]["webhooks"] == "enabled" and body["backends"]["task_store"] == "sqlite"
    assert "GET /v1/tasks/{task_id}/events (Server-Sent Events)" in body["endpoints"]


def test_openapi_docs(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/generate" in spec["paths"] and "/v1/result/{task_id}" in spec["paths"]
    fields = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert all(field.get("description") for field in fields.values()), "every request field is documented"


def test_empty_prompt_is_400_detail(client: httpx.Client) -> None:
    for body in ({"prompt": ""}, {"prompt": "   "}, {}):
        response = client.post("/v1/generate", json=body)
        assert response.status_code == 400
        assert response.json() == {"detail": "Prompt must not be empty."}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"guidance_scale": -1}, "Guidance scale cannot be negative."),
        ({"height": 8192}, "Height must be smaller than 8192."),
        ({"width": 9000}, "Width must be smaller than 8192."),
        ({"height": 100}, "Height must be a multiple of 8."),
        ({"width": 1024}, "Width must be between 32 and 512."),
        ({"num_inference_steps": 0}, "Number of inference steps must be between 1 and 150."),
        ({"num_inference_steps": 1000}, "Number of inference steps must be between 1 and 150."),
        ({"strength": 0}, "Strength must be in (0, 1]."),
        ({"lora": {"name": "nope"}}, "Unknown LoRA 'nope'. Available: cozy-wood, neon-minimal, pastel-studio."),
    ],
)
def test_invalid_input_is_422(client: httpx.Client, body: dict, message: str) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", **body})
    assert response.status_code == 422, response.text
    assert response.json() == {"error_code": "INVALID_INPUT", "message": message}


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "a desk", "guidance_scale": "lots"},
        {"prompt": "a desk", "unknown_field": 1},
        {"prompt": "a desk", "seed": -5},
        {"prompt": ["not", "a", "string"]},
    ],
)
def test_malformed_fields_are_422_with_the_field_named(client: httpx.Client, body: dict) -> None:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error_code"] == "INVALID_INPUT" and payload["message"]


def test_not_json_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/generate", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error_code"] == "INVALID_INPUT"


def test_unknown_task_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/result/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error_code"] == "TASK_NOT_FOUND"
    assert client.delete("/v1/tasks/does-not-exist").status_code == 404


def test_oversized_upload_is_413(client: httpx.Client) -> None:
    big = b"\0" * (10 * 1024 * 1024 + 200 * 1024)
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert response.json()["error_code"] == "PAYLOAD_TOO_LARGE"


def test_undecodable_upload_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/v1/generate", data={"prompt": "a desk"}, files={"image": ("x.png", b"not an image", "image/png")}
    )
    assert response.status_code == 422 and response.json()["error_code"] == "INVALID_IMAGE"


def test_decompression_bomb_is_refused(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 Mpx > 16.7 Mpx limit, ~25 KB on the wire
    response = client.post(
        "/v1/generate", data={"prompt": "a desk"}, files={"image": ("bomb.png", buffer.getvalue(), "image/png")}
    )
    assert response.status_code in (413, 422), response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/desk.png",
        "http://[::1]/desk.png",
        "file:///etc/passwd",
        "http://0x0a000001/desk.png",  # 10.0.0.1 spelled in hex
    ],
)
def test_hostile_image_urls_are_refused(client: httpx.Client, url: str) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "initial_image_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "UNSAFE_URL"


def test_hostile_webhook_url_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "webhook_url": "http://169.254.169.254/hook"})
    assert response.status_code == 422 and response.json()["error_code"] == "UNSAFE_URL"


def test_s3_url_outside_the_bucket_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "initial_image_url": "s3://other/x.png"})
    assert response.status_code == 422 and response.json()["error_code"] == "INVALID_INPUT"


def test_refused_submits_create_no_task(serve_app: ServeApp, client: httpx.Client) -> None:
    before = _task_count(serve_app)
    client.post("/v1/generate", json={"prompt": "a desk", "guidance_scale": -1})
    client.post("/v1/generate", json={"prompt": ""})
    assert _task_count(serve_app) == before


def _task_count(serve_app: ServeApp) -> int:
    import sqlite3

    with sqlite3.connect(serve_app.data_dir / "main" / "tasks.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


def test_live_events_stream_progress_then_the_result(client: httpx.Client) -> None:
    # A long task (150 steps), cancelled once a diffusion step has been seen: the stream then ends
    # with its result, failed CANCELLED.
    body = {"prompt": "a desk", "num_inference_steps": 150, "height": 128, "width": 128}
    task_id = client.post("/v1/generate", json=body).json()["task_id"]
    kinds: list[str] = []
    steps: list[int] = []
    ids: list[int] = []
    result: dict[str, object] = {}
    # Through Serve's proxy, as a browser's EventSource would read it; bounded by the read timeout.
    with client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=120) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("event: "):
                kind = line[7:]
                kinds.append(kind)
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if kind == "progress" and data.get("step") is not None:
                    if not steps:
                        assert client.delete(f"/v1/tasks/{task_id}").status_code == 202
                    steps.append(data["step"])
                if kind == "result":
                    result = data
    assert kinds[0] == "progress" and kinds[-1] == "result" and kinds.count("result") == 1
    assert result["status"] == "failed" and result["error_code"] == "CANCELLED" and result["task_id"] == task_id
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "event ids only grow"
    assert steps and steps == sorted(steps) and max(steps) < 150, "steps arrive as they happen"
    resumed = client.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": str(ids[-1])}, timeout=30)
    assert "event: " not in resumed.text, "nothing new after the result"
