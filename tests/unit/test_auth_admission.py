"""API keys and admission by cost over HTTP: the ingress's FastAPI app under TestClient with a real
SQLite task store and local storage (see `make_context`), keys made the way the CLI makes them."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.deps import IngressContext
from serve_app.config import AppArgs
from serve_app.ingress import app
from serve_app.tasks.api_keys import KeyLimits
from tests.support.ingress import ingress_context, png


def _files(ctx: IngressContext) -> list[Path]:
    return sorted(p for p in Path(ctx.args.storage.root or "").rglob("*") if p.is_file())  # type: ignore[union-attr]


def jpeg(width: int = 48, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def bmp(width: int = 48, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="BMP")
    return buffer.getvalue()


# -- auth on ---------------------------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[IngressContext]:
    auth = {"enabled": True, "default_limits": {"requests_per_minute": 100, "max_in_flight": 20}}
    with ingress_context(tmp_path, {"max_active": 50, "retry_after_s": 9}, auth=auth) as ctx:
        yield ctx
    app.openapi_schema = None


@pytest.fixture
def client(keyed: IngressContext) -> TestClient:
    return TestClient(app)


def _key(ctx: IngressContext, name: str = "a", **limits: int) -> dict[str, str]:
    _, token = ctx.tasks.keys.create(name, limits=KeyLimits(**limits))
    return {"Authorization": f"Bearer {token}"}


def test_routes_need_a_live_key_and_public_ones_do_not(client: TestClient, keyed: IngressContext) -> None:
    for method, path in [
        ("post", "/v1/generate"),
        ("get", "/v1/result/abc"),
        ("delete", "/v1/tasks/abc"),
        ("post", "/v1/tasks/abc/cancel"),
        ("get", "/files/anonymous/20260101/x.png"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, (method, path)
        assert response.json()["error_code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"] == 'Bearer realm="imagegen"'
    bad = client.post("/v1/generate", json={"prompt": "x"}, headers={"X-API-Key": "igs_nope"})
    assert bad.status_code == 401 and bad.json()["error_code"] == "INVALID_API_KEY"
    assert "igs_nope" not in bad.text, "what was sent is never echoed"
    assert client.get("/info").json()["auth"]["api_keys"] == "required"
    assert client.get("/static/catalog/images/desk-001.png").status_code == 200
    assert keyed.tasks.count_active() == 0


def test_a_task_is_seen_and_cancelled_only_by_its_key(client: TestClient, keyed: IngressContext) -> None:
    alice, bob = _key(keyed, "alice"), _key(keyed, "bob")
    task_id = client.post("/v1/generate", json={"prompt": "a desk"}, headers=alice).json()["task_id"]
    assert client.get(f"/v1/result/{task_id}", headers=alice).json()["status"] == "queued"
    for response in (
        client.get(f"/v1/result/{task_id}", headers=bob),
        client.delete(f"/v1/tasks/{task_id}", headers=bob),
        client.post(f"/v1/tasks/{task_id}/cancel", headers=bob),
    ):
        assert response.status_code == 404 and response.json()["error_code"] == "TASK_NOT_FOUND"
    assert keyed.tasks.require(task_id).status == "queued", "bob's cancel changed nothing"
    x_api_key = {"X-API-Key": alice["Authorization"].removeprefix("Bearer ")}
    assert client.delete(f"/v1/tasks/{task_id}", headers=x_api_key).json()["error_code"] == "CANCELLED"


def test_images_are_stored_under_the_keys_user_and_served_only_to_it(client: TestClient, keyed: IngressContext) -> None:
    alice, bob = _key(keyed, "alice"), _key(keyed, "bob")
    response = client.post(
        "/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", png(), "image/png")}, headers=alice
    )
    record = keyed.tasks.require(response.json()["task_id"])
    owner = keyed.tasks.keys.authenticate(alice["Authorization"].removeprefix("Bearer ")).user_id
    assert record.request["user_id"] == owner and record.input_key and record.input_key.startswith(f"{owner}/")
    path = "/files/" + record.input_key
    assert client.get(path, headers=alice).status_code == 200
    assert client.get(path, headers=alice).headers["cache-control"].startswith("private")
    assert client.get(path, headers=bob).status_code == 404
    assert client.get(path).status_code == 401
    mismatch = client.post("/v1/generate", json={"prompt": "a desk", "user_id": "someone-else"}, headers=alice)
    assert mismatch.status_code == 403 and mismatch.json()["error_code"] == "USER_ID_MISMATCH"
    same = client.post("/v1/generate", json={"prompt": "a desk", "user_id": owner}, headers=alice)
    assert same.status_code == 202


def test_idempotency_keys_are_per_api_key(client: TestClient, keyed: IngressContext) -> None:
    alice, bob = _key(keyed, "alice"), _key(keyed, "bob")
    body = {"prompt": "a desk", "seed": 1}
    first = client.post("/v1/generate", json=body, headers={**alice, "Idempotency-Key": "same"}).json()
    other = client.post("/v1/generate", json={**body, "seed": 2}, headers={**bob, "Idempotency-Key": "same"})
    assert other.status_code == 202 and other.json()["task_id"] != first["task_id"], "no 409 across keys"


def test_per_image_limit_is_403_and_stores_nothing(client: TestClient, keyed: IngressContext) -> None:
    small = _key(keyed, "small", max_pixel_steps_per_image=64 * 64 * 20)
    assert client.post("/v1/generate", json={"prompt": "a desk"}, headers=small).status_code == 202
    response = client.post(
        "/v1/generate",
        data={"prompt": "a desk", "num_inference_steps": "21"},
        files={"image": ("d.png", png(), "image/png")},
        headers=small,
    )
    assert response.status_code == 403 and response.json()["error_code"] == "KEY_LIMIT_EXCEEDED"
    assert keyed.tasks.count_active() == 1 and _files(keyed) == []


def test_rate_and_in_flight_limits_are_429_with_retry_after(client: TestClient, keyed: IngressContext) -> None:
    rate = _key(keyed, "rate", requests_per_minute=2)
    for _ in range(2):
        assert client.post("/v1/generate", json={"prompt": "a desk"}, headers=rate).status_code == 202
    limited = client.post(
        "/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", png(), "image/png")}, headers=rate
    )
    assert limited.status_code == 429 and limited.json()["error_code"] == "RATE_LIMITED"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    busy = _key(keyed, "busy", max_in_flight=1)
    assert client.post("/v1/generate", json={"prompt": "a desk"}, headers=busy).status_code == 202
    held = client.post("/v1/generate", json={"prompt": "a desk"}, headers=busy)
    assert held.status_code == 429 and held.json()["error_code"] == "TOO_MANY_TASKS"
    assert held.headers["retry-after"] == "9"
    assert client.post("/v1/generate", json={"prompt": "a desk"}, headers=_key(keyed, "c")).status_code == 202
    assert keyed.tasks.count_active() == 4 and _files(keyed) == [], "refused uploads are not stored"


def test_a_revoked_key_stops_at_once(client: TestClient, keyed: IngressContext) -> None:
    key, token = keyed.tasks.keys.create("temp")
    headers = {"Authorization": f"Bearer {token}"}
    task_id = client.post("/v1/generate", json={"prompt": "a desk"}, headers=headers).json()["task_id"]
    keyed.tasks.keys.revoke(key.key_id)
    response = client.get(f"/v1/result/{task_id}", headers=headers)
    assert response.status_code == 401 and response.json()["error_code"] == "API_KEY_REVOKED"


def test_no_key_or_secret_in_logs_results_or_info(
    client: TestClient, keyed: IngressContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, token = keyed.tasks.keys.create("secretive")
    secret = token.split("_", 2)[2]
    headers = {"Authorization": f"Bearer {token}"}
    bodies = [
        client.post("/v1/generate", json={"prompt": "a desk"}, headers=headers),
        client.post("/v1/generate", json={"prompt": ""}, headers=headers),
        client.get("/v1/result/nope", headers=headers),
        client.get("/info"),
        client.get("/openapi.json"),
    ]
    task_id = bodies[0].json()["task_id"]
    bodies.append(client.get(f"/v1/result/{task_id}", headers=headers))
    keyed.tasks.keys.revoke(key.key_id)
    bodies.append(client.get(f"/v1/result/{task_id}", headers=headers))
    for response in bodies:
        assert secret not in response.text
    assert secret not in caplog.text
    assert secret not in repr(keyed.tasks.require(task_id).model_dump())


def test_openapi_declares_the_key_schemes_when_keys_are_on(client: TestClient) -> None:
    app.openapi_schema = None
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert schema["paths"]["/v1/generate"]["post"]["security"]
    assert "security" not in schema["paths"]["/healthcheck"]["get"]
    for code in ("401", "403", "429", "503"):
        assert code in schema["paths"]["/v1/generate"]["post"]["responses"]


def test_public_s3_urls_are_refused_with_keys_on() -> None:
    storage = {"kind": "s3", "bucket": "b", "url_mode": "public", "public_base_url": "https://cdn"}
    with pytest.raises(ValueError, match="presigned"):
        AppArgs.model_validate({"auth": {"enabled": True}, "storage": storage})
    AppArgs.model_validate({"storage": storage})  # fine while keys are off


def test_keys_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    app_args = {"data_dir": str(tmp_path / "var"), "auth": {"enabled": True}}
    config.write_text(yaml.safe_dump({"applications": [{"name": "app", "args": app_args}]}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "serve_app.keys", "--config", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    created = cli("create", "spring", "--rpm", "5", "--user-id", "shop")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("igs_") and token not in created.stderr
    key_id = token.split("_")[1]
    listed = cli("list")
    assert key_id in listed.stdout and "requests_per_minute=5" in listed.stdout and "user=shop" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    assert cli("revoke", key_id).returncode == 0
    assert key_id not in cli("list").stdout and key_id in cli("list", "--all").stdout
    assert cli("revoke", "0000000000000000").returncode == 1


# -- admission by cost, upload budget, stored photos (auth off) -----------------------------------


@pytest.fixture
def open_ctx(tmp_path: Path) -> Iterator[IngressContext]:
    admission = {"max_active_cost": 64 * 64 * 20 * 2, "upload_bytes_in_flight": 200_000}
    with ingress_context(tmp_path, {"max_active": 50, "retry_after_s": 7}, admission=admission) as ctx:
        yield ctx


def test_one_request_over_the_replica_cost_limit_is_422(open_ctx: IngressContext) -> None:
    client = TestClient(app)
    limit = open_ctx.limits.request_cost_limit()
    assert limit == 256 * 256 * 150  # the tiny preset's max_request_cost
    body = {"prompt": "a desk", "height": 264, "width": 256, "num_inference_steps": 150}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422 and response.json()["error_code"] == "COST_TOO_HIGH"
    assert open_ctx.tasks.count_active() == 0


def test_the_queue_cost_budget_is_503_with_retry_after(open_ctx: IngressContext) -> None:
    client = TestClient(app)
    for _ in range(2):
        assert client.post("/v1/generate", json={"prompt": "a desk"}).status_code == 202  # 64x64x20 each
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", png(), "image/png")})
    assert response.status_code == 503 and response.json()["error_code"] == "QUEUE_COST_FULL"
    assert response.headers["retry-after"] == "7" and _files(open_ctx) == []
    assert client.get("/info").json()["queue"]["max_active_cost"] == 64 * 64 * 20 * 2


def test_a_bound_in_time_is_503_queue_wait_too_long_and_stores_nothing(tmp_path: Path) -> None:
    with ingress_context(tmp_path, {"max_active": 50}, admission={"max_predicted_wait_s": 2.5}) as ctx:
        client = TestClient(app)
        for _ in range(2):  # no backlog seen yet: taken
            assert client.post("/v1/generate", json={"prompt": "a desk"}).status_code == 202
        with ctx.tasks.db.tx() as tx:  # five done before, in one backlog, one a second, each as big
            for index in range(6):
                tx.run(
                    "INSERT INTO tasks (task_id, kind, status, request, created_at, updated_at, available_at,"
                    " started_at, finished_at, cost) VALUES (?, 'desk', 'done', '{}', 0, 0, 0, 1, ?, ?)",
                    (f"before{index}", 10.0 + index, 64 * 64 * 20),  # as the submits here cost
                )
        # two in flight, so a third is done in 3 s at that rate: past the bound
        photo = {"image": ("d.png", png(), "image/png")}
        response = client.post("/v1/generate", data={"prompt": "a desk"}, files=photo)
        assert response.status_code == 503 and response.json()["error_code"] == "QUEUE_WAIT_TOO_LONG"
        assert response.headers["retry-after"] == "1" and _files(ctx) == [] and ctx.tasks.count_active() == 2
        body = {"prompt": "a desk", "size": "64x64", "response_format": "b64_json"}
        response = client.post("/v1/images/generations", json=body, headers={"Prefer": "respond-async"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.get("/info").json()["queue"]["max_predicted_wait_s"] == 2.5


def test_uploads_share_a_byte_budget_and_give_it_back(open_ctx: IngressContext) -> None:
    client = TestClient(app)
    budget = open_ctx.uploads
    assert budget is not None and budget.total == 200_000
    with budget.hold() as take:
        take(150_000)  # another upload being received
        response = client.post(
            "/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.bmp", bmp(200, 100), "image/bmp")}
        )
        assert response.status_code == 503 and response.json()["error_code"] == "UPLOADS_BUSY"
        assert response.headers["retry-after"] == "7"
    assert budget.used == 0, "every byte is given back, refused or not"
    ok = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.bmp", bmp(200, 100), "image/bmp")})
    assert ok.status_code == 202 and budget.used == 0


def test_a_photo_is_stored_as_sent_when_its_format_is_safe(open_ctx: IngressContext) -> None:
    client = TestClient(app)
    sent = jpeg()
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.jpg", sent, "image/jpeg")})
    record = open_ctx.tasks.require(response.json()["task_id"])
    assert record.input_key and record.input_key.endswith(".jpg")
    served = client.get("/files/" + record.input_key)
    assert served.content == sent and served.headers["content-type"] == "image/jpeg"
    open_ctx.tasks.request_cancel(record.task_id)
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.bmp", bmp(), "image/bmp")})
    record = open_ctx.tasks.require(response.json()["task_id"])
    assert record.input_key and record.input_key.endswith(".png"), "BMP is re-encoded"
    assert Image.open(io.BytesIO(client.get("/files/" + record.input_key).content)).format == "PNG"
