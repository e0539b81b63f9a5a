"""The HTTP layer without Ray: the error mapper, body parsing, intake, idempotency, shedding, files.

The ingress's FastAPI app runs under TestClient with a real task store and local storage; the
runner and probes are fakes that record calls.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.deps import DeploymentView, IngressContext, ProbeCache
from serve_app.errors import StorageError
from serve_app.ingress import app
from serve_app.presets import load_preset
from tests.support.ingress import FakeHandle, FakeReplicaStates, ingress_context, multipart, png


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, {"max_active": 3, "retry_after_s": 9}) as context:
        yield context


@pytest.fixture
def client(ctx: IngressContext) -> TestClient:
    return TestClient(app)


def test_empty_prompt_is_400_in_the_source_specs_shape(client: TestClient, ctx: IngressContext) -> None:
    response = client.post("/v1/generate", json={"prompt": ""})
    assert response.status_code == 400 and response.json() == {"detail": "Prompt must not be empty."}
    assert ctx.metrics.rejections == [(400, "BAD_REQUEST")]  # type: ignore[attr-defined]


def test_validation_errors_name_the_field(client: TestClient) -> None:
    response = client.post("/v1/generate", json={"prompt": "x", "guidance_scale": "lots"})
    assert response.status_code == 422
    assert response.json()["message"].startswith("guidance_scale: ")
    response = client.post("/v1/generate", json={"prompt": "x", "colour": "red"})
    assert response.json() == {"error_code": "INVALID_INPUT", "message": "colour: Unknown field."}
    response = client.post("/v1/generate", json={"prompt": "x", "lora": {"name": "cozy-wood", "extra": 1}})
    assert response.json()["message"] == "lora.extra: Unknown field."


def test_json_array_and_unknown_content_type_are_422(client: TestClient) -> None:
    assert client.post("/v1/generate", json=["x"]).json()["message"] == "Request body must be a JSON object."
    response = client.post("/v1/generate", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert response.status_code == 422 and "Unsupported content type" in response.json()["message"]


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert client.get("/v2/generate").json()["error_code"] == "NOT_FOUND"
    response = client.put("/v1/generate")
    assert response.status_code == 405 and response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_submit_records_queued_task_and_dispatches(client: TestClient, ctx: IngressContext) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "lora": {"name": "cozy-wood"}})
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert ctx.runner.run.calls == [(task_id,)]  # type: ignore[attr-defined]
    record = ctx.tasks.require(task_id)
    assert record.request["height"] == 64 and record.request["num_inference_steps"] == 20
    assert isinstance(record.request["seed"], int), "a seed is chosen at submit so a retry reproduces"
    body = client.get(f"/v1/result/{task_id}").json()
    assert body["status"] == "queued" and body["progress"] == {"stage": "queued"}


def test_multipart_upload_is_decoded_and_kept(client: TestClient, ctx: IngressContext) -> None:
    response = client.post(
        "/v1/generate",
        data={"prompt": "a desk", "lora": '{"name": "neon-minimal", "scale": 0.5}', "seed": "3", "width": "96"},
        files={"image": ("d.png", png(), "image/png")},
    )
    assert response.status_code == 202, response.text
    record = ctx.tasks.require(response.json()["task_id"])
    resolved_lora = {"name": "neon-minimal", "scale": 0.5, "trigger_words": ["neonmin style"]}
    assert record.request["lora"] == resolved_lora and record.request["seed"] == 3
    assert record.initial_image_url and record.initial_image_url.startswith("http://t/files/anonymous/")
    kept = client.get(record.initial_image_url.removeprefix("http://t"))
    assert kept.status_code == 200 and Image.open(io.BytesIO(kept.content)).size == (40, 30)


def test_multipart_rejects_both_sources_and_extra_files(client: TestClient) -> None:
    both = client.post(
        "/v1/generate",
        data={"prompt": "a desk", "initial_image_url": "https://example.com/d.png"},
        files={"image": ("d.png", png(), "image/png")},
    )
    assert both.status_code == 422 and "not both" in both.json()["message"]
    extra = client.post("/v1/generate", data={"prompt": "a desk"}, files={"other": ("d.png", png(), "image/png")})
    assert extra.status_code == 422 and "unexpected file part" in extra.json()["message"]


def test_content_length_over_the_limit_is_413_before_reading(client: TestClient, ctx: IngressContext) -> None:
    big = b"x" * (ctx.limits.max_upload_bytes + 100 * 1024)
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", big, "image/png")})
    assert response.status_code == 413 and response.json()["error_code"] == "PAYLOAD_TOO_LARGE"
    huge_json = client.post("/v1/generate", content=b"{" + b" " * 300_000 + b"}")
    assert huge_json.status_code == 413


def test_webhooks_refused_without_a_secret(client: TestClient) -> None:
    response = client.post("/v1/generate", json={"prompt": "a desk", "webhook_url": "https://example.com/hook"})
    assert response.status_code == 422 and response.json()["error_code"] == "WEBHOOKS_DISABLED"


def test_idempotency_and_scope(client: TestClient, ctx: IngressContext) -> None:
    body = {"prompt": "a desk", "seed": 1}
    first = client.post("/v1/generate", json=body, headers={"Idempotency-Key": "k1"}).json()["task_id"]
    again = client.post("/v1/generate", json=body, headers={"Idempotency-Key": "k1"}).json()["task_id"]
    assert first == again and len(ctx.runner.run.calls) == 1  # type: ignore[attr-defined]
    conflict = client.post("/v1/generate", json={**body, "seed": 2}, headers={"Idempotency-Key": "k1"})
    assert conflict.status_code == 409


def test_queue_full_is_503_with_retry_after_and_changes_nothing(client: TestClient, ctx: IngressContext) -> None:
    for _ in range(3):
        assert client.post("/v1/generate", json={"prompt": "a desk"}).status_code == 202
    response = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", png(), "image/png")})
    assert response.status_code == 503 and response.headers["retry-after"] == "9"
    assert response.json()["error_code"] == "QUEUE_FULL"
    assert ctx.tasks.count_active() == 3
    assert not list(Path(ctx.args.storage.root or "").rglob("*.png")), "a shed upload is not stored"  # type: ignore[union-attr]


def test_cancel_and_404(client: TestClient) -> None:
    task_id = client.post("/v1/generate", json={"prompt": "a desk"}).json()["task_id"]
    cancelled = client.delete(f"/v1/tasks/{task_id}")
    assert cancelled.status_code == 202 and cancelled.json()["error_code"] == "CANCELLED"
    assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 409
    assert client.get("/v1/result/nope").json()["error_code"] == "TASK_NOT_FOUND"


def test_info_shows_retention_retries_and_the_task_store(client: TestClient) -> None:
    body = client.get("/info").json()
    assert body["backends"]["task_store"] == "sqlite"
    assert body["retention"]["ttl_s"] == 7 * 24 * 3600 and body["retries"]["max_attempts"] == 5
    assert body["s3_input_prefixes"] is None, "local storage takes no s3:// inputs"


def test_files_route_refuses_traversal(client: TestClient) -> None:
    for path in ("/files/../tasks.db", "/files/%2e%2e/tasks.db", "/static/catalog/images/..%2f..%2fcatalog.json"):
        assert client.get(path).status_code == 404, path


def test_files_route_serves_images_but_not_their_records(client: TestClient, ctx: IngressContext) -> None:
    asyncio.run(ctx.images.put("u/20260101/a.png", png(), metadata={"prompt": "secret plans"}))
    assert client.get("/files/u/20260101/a.png").status_code == 200
    response = client.get("/files/u/20260101/a.png.json")
    assert response.status_code == 404 and "secret" not in response.text


def test_healthcheck_reports_a_deployment_without_a_running_replica(client: TestClient, ctx: IngressContext) -> None:
    assert client.get("/healthcheck").status_code == 200
    states: FakeReplicaStates = ctx.replica_states  # type: ignore[assignment]
    states.states[("imagegen", "Generator")] = DeploymentView("UPDATING", {"STARTING": 1, "RUNNING": 0})
    response = client.get("/healthcheck")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["deployments"]["generator"] == "not ready: no running replica (replicas: 1 starting)"
    # One running replica of several is enough: the deployment serves (a rolling update, a lost node).
    states.states[("imagegen", "Generator")] = DeploymentView("UPDATING", {"RUNNING": 1, "STARTING": 1})
    assert client.get("/healthcheck").status_code == 200
    # Autoscaled to zero on purpose (min_replicas 0, the controller says HEALTHY): ready, and says so.
    states.states[("imagegen", "Generator")] = DeploymentView("HEALTHY", {})
    response = client.get("/healthcheck")
    assert response.status_code == 200
    assert response.json()["deployments"]["generator"].startswith("ready (scaled to zero")
    # Its first replica starting from zero (UPSCALING): requests queue for it, the app is not degraded.
    states.states[("imagegen", "Generator")] = DeploymentView("UPSCALING", {"STARTING": 1})
    response = client.get("/healthcheck")
    assert response.status_code == 200
    assert response.json()["deployments"]["generator"] == "ready (starting from zero: 1 starting)"
    # No replica and not healthy (every replica died, none replaced yet): not ready.
    states.states[("imagegen", "Generator")] = DeploymentView("UNHEALTHY", {})
    assert client.get("/healthcheck").status_code == 503
    del states.states[("imagegen", "Generator")]
    assert client.get("/healthcheck").json()["deployments"]["generator"] == "not ready: not deployed"


def test_healthcheck_does_not_send_the_deployments_a_request(client: TestClient, ctx: IngressContext) -> None:
    # A probe request would queue behind a busy replica's batches; the controller's view does not.
    ctx.probes["generator"] = FakeHandle(fail=True)  # type: ignore[assignment]
    assert client.get("/healthcheck").status_code == 200
    assert ctx.probes["generator"].check_health.calls == []  # type: ignore[attr-defined]


def test_healthcheck_is_503_when_the_serve_controller_does_not_answer(client: TestClient, ctx: IngressContext) -> None:
    states: FakeReplicaStates = ctx.replica_states  # type: ignore[assignment]
    states.error = RuntimeError("controller gone")
    response = client.get("/healthcheck")
    assert response.status_code == 503
    assert response.json()["deployments"]["generator"] == "not ready: the Serve controller gave an error"


class _Probed:
    """A storage probe that counts its calls and fails with `error` when one is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def test_healthcheck_reuses_its_storage_probe_for_a_while(
    client: TestClient, ctx: IngressContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 probe writes an object: a caller hammering /healthcheck must not make one write each."""
    now = [100.0]
    probe = _Probed()
    monkeypatch.setattr(ctx.images, "check", probe)
    ctx.storage_probe = ProbeCache(ttl_s=5, clock=lambda: now[0])
    assert [client.get("/healthcheck").status_code for _ in range(5)] == [200] * 5
    assert probe.calls == 1
    probe.error = StorageError("down", error_code="S3_UNAVAILABLE")
    now[0] += 4.9
    assert client.get("/healthcheck").status_code == 200 and probe.calls == 1, "within the ttl: the last answer"
    now[0] += 0.2
    assert client.get("/healthcheck").json()["storage"] == "not ready: S3_UNAVAILABLE" and probe.calls == 2
    assert ctx.args.health.storage_probe_ttl_s == 5.0, "the default"


def test_healthcheck_shows_an_anonymous_caller_no_exception_text(
    client: TestClient, ctx: IngressContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "answered 401: invalid api_key igs_abc at 10.0.3.7:/var/lib/imagegen/tasks.db"
    probe = _Probed()
    probe.error = StorageError(f"Cloudinary {secret}", error_code="S3_UNAVAILABLE")
    monkeypatch.setattr(ctx.images, "check", probe)

    def broken_ping() -> None:
        raise sqlite3.OperationalError(f"disk I/O error {secret}")

    monkeypatch.setattr(ctx.tasks, "ping", broken_ping)
    ctx.replica_states.error = RuntimeError(f"controller {secret}")  # type: ignore[attr-defined]
    response = client.get("/healthcheck")
    assert response.status_code == 503 and secret not in response.text
    assert "OperationalError" not in response.text and "RuntimeError" not in response.text
    body = response.json()
    assert (body["storage"], body["task_store"]) == ("not ready: S3_UNAVAILABLE", "not ready: TASK_STORE_UNAVAILABLE")
    assert body["deployments"]["generator"] == "not ready: the Serve controller gave an error"
    assert caplog.text.count(secret) == 3, "the details are in the logs"


def test_info_lists_loras_and_limits(client: TestClient) -> None:
    body = client.get("/info").json()
    assert [lora["name"] for lora in body["loras"]] == ["cozy-wood", "neon-minimal", "pastel-studio"]
    assert body["limits"]["max_side"] == 512 and body["backends"]["webhooks"] == "disabled"
    assert body["models"]["generator"]["tuning"] == {"trace_unet": True}  # tiny: the CPU's traced UNet
    assert body["models"]["editor"]["tuning"] == {}
    assert body["models"]["translator"] == {"model_id": "tiny", "num_beams": 1}
    assert body["backends"]["prompt_writer"]["machine_translation"] is True


async def test_a_resolver_that_never_answers_stalls_nothing_else(
    ctx: IngressContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Image URLs whose DNS never answers: each such submit ends 422 after dns_timeout_s, and while
    the resolver is still stuck, polls and other submits are served (they never share its threads)."""
    import threading

    import httpx

    from serve_app.api.deps import UploadBudget
    from serve_app.net import FetchPolicy, guard

    release, lock, entered = threading.Event(), threading.Lock(), [0]

    def stuck_resolver(host: str) -> list[str]:
        with lock:
            entered[0] += 1
        release.wait(60)  # bounded, so no thread outlives the test run by much
        raise OSError("resolver gave up")

    monkeypatch.setattr(guard, "default_resolver", stuck_resolver)
    ctx.args = ctx.args.model_copy(update={"fetch": FetchPolicy(dns_timeout_s=1.0, dns_max_concurrency=4)})
    ctx.uploads = UploadBudget(64 * ctx.limits.max_upload_bytes, 5)  # room for 40 fetches (each reserves its cap)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
            first = (await client.post("/v1/generate", json={"prompt": "a desk"})).json()["task_id"]
            stuck = [
                asyncio.ensure_future(
                    client.post("/v1/generate", json={"prompt": "x", "initial_image_url": f"http://slow{i}.test/d.png"})
                )
                for i in range(40)  # more than the DNS pool, and than the default executor ever has (32)
            ]
            for _ in range(3000):  # wait (not on the default executor) until the DNS pool is all stuck
                if entered[0] >= 4:
                    break
                await asyncio.sleep(0.01)
            assert entered[0] >= 4, "lookups never started"

            others = [client.get(f"/v1/result/{first}") for _ in range(10)]
            others += [client.post("/v1/generate", json={"prompt": f"desk {i}"}) for i in range(2)]
            answers = await asyncio.wait_for(asyncio.gather(*others), timeout=30)
            assert not release.is_set(), "served while the resolver was still stuck"
            assert [a.status_code for a in answers] == [200] * 10 + [202] * 2

            refused = await asyncio.wait_for(asyncio.gather(*stuck), timeout=60)
            assert {r.status_code for r in refused} == {422}
            assert all("timed out" in r.json()["message"] and r.json()["error_code"] == "UNSAFE_URL" for r in refused)
            assert ctx.tasks.count_active() == 3, "a refused submit creates no task"
    finally:
        release.set()


HOSTILE_JSON = [
    (b'{"prompt": "a \\ud800 desk"}', "not valid Unicode"),  # a lone surrogate
    (b'{"\\udc00": 1, "prompt": "x"}', "not valid Unicode"),
    (('{"prompt": "x", "seed": ' + "9" * 5000 + "}").encode(), "number too long"),
    (('{"prompt": "x", "num_inference_steps": -' + "9" * 5000 + "}").encode(), "number too long"),
    (('{"prompt": "x", "lora": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), "nests too deeply"),
    (b'{"prompt": "x", "guidance_scale": NaN}', "guidance_scale: Input should be a finite number"),
    (b'{"prompt": "x", "strength": Infinity}', "strength: Input should be a finite number"),
    (b'{"prompt": "x", "guidance_scale": -Infinity}', "guidance_scale: Input should be a finite number"),
    (b'{"prompt": "x", "lora": {"name": "cozy-wood", "scale": NaN}}', "lora.scale: Input should be a finite number"),
    (b'{"prompt": "x", "guidance_scale": 1e400}', "guidance_scale: Input should be a finite number"),
    (b'{"prompt": "\xff\xfe"}', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE_JSON)
def test_hostile_json_is_a_422_never_a_500(client: TestClient, ctx: IngressContext, body: bytes, message: str) -> None:
    response = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "INVALID_INPUT" and message in response.json()["message"]
    assert ctx.tasks.count_active() == 0, "a refused submit changes nothing"


@pytest.mark.parametrize(
    ("parts", "status"),
    [
        ([("prompt", None, b"a"), ("prompt", None, b"b")], 422),  # repeated field
        ([("prompt", None, b"a"), ("image", "a.png", png()), ("image", "b.png", png())], 422),  # two images
        ([("prompt", None, b"a"), (None, None, b"nameless")], 422),
        ([("prompt", None, b"a")] + [(f"f{i}", None, b"x") for i in range(200)], 422),  # many parts
        ([("prompt", None, b"a" * 3_000_000)], 422),  # a huge field value (Starlette: part over 1 MB)
        ([("prompt", None, b"x"), ("guidance_scale", None, b"NaN")], 422),
        ([("prompt", None, b"x"), ("strength", None, b"inf")], 422),
        ([("prompt", None, b"x"), ("seed", None, b"9" * 5000)], 422),
        ([("prompt", None, b"x"), ("lora", None, b"{" * 50_000)], 422),
        ([("prompt", None, b"x"), ("lora", None, b'{"name": "cozy-wood", "scale": NaN}')], 422),
    ],
)
def test_odd_multipart_is_a_4xx_never_a_500(
    client: TestClient, ctx: IngressContext, parts: list[tuple[str, str | None, bytes]], status: int
) -> None:
    body, headers = multipart(parts)
    response = client.post("/v1/generate", content=body, headers=headers)
    # A malformed form (too many files or parts, a nameless or oversized part) is invalid input
    # like a repeated field: the v1 contract's 422 INVALID_INPUT, never Starlette's bare 400.
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == "INVALID_INPUT"
    assert ctx.tasks.count_active() == 0


def test_a_form_field_that_is_not_utf8_is_stored_as_valid_unicode(client: TestClient, ctx: IngressContext) -> None:
    body, headers = multipart([("prompt", None, b"\xff\xfe desk")])
    response = client.post("/v1/generate", content=body, headers=headers)
    assert response.status_code == 202, response.text
    prompt = ctx.tasks.require(response.json()["task_id"]).request["prompt"]
    assert prompt.endswith(" desk") and prompt.encode("utf-8")  # Starlette reads it as Latin-1: still text


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_types_are_4xx(client: TestClient, content_type: str) -> None:
    response = client.post("/v1/generate", content=b'{"prompt": "x"}', headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text


def test_405_carries_allow(client: TestClient) -> None:
    response = client.put("/v1/generate", json={"prompt": "x"})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_a_prompt_is_optional_only_with_a_photo_and_a_missing_one_without_is_the_source_specs_400(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
    assert "prompt" not in schema.get("required", []) and schema["properties"]["prompt"]["minLength"] == 1
    assert "Required without a photo" in schema["properties"]["prompt"]["description"]
    assert "without a photo, a prompt" in schema["description"]
    response = client.post("/v1/generate", json={"seed": 1})
    assert response.status_code == 400 and response.json() == {"detail": "Prompt must not be empty."}


def test_request_schema_follows_the_servers_preset_and_backends() -> None:
    from serve_app.products.base import SchemaContext
    from serve_app.products.desk.route import request_schemas

    preset = load_preset("tiny")
    bare = preset.model_copy(update={"loras": []})
    schemas = request_schemas(SchemaContext(bare, preset.limits, webhooks=False, s3_inputs=False))
    request, form = schemas["GenerateRequest"], schemas["GenerateForm"]
    assert request["properties"]["lora"]["type"] == "null" and "lora" not in form["properties"]
    assert request["properties"]["webhook_url"]["type"] == "null" and "webhook_url" not in form["properties"]
    url = next(b for b in request["properties"]["initial_image_url"]["anyOf"] if b.get("type") == "string")
    assert url["pattern"] == "^https?://"
    full = request_schemas(SchemaContext(preset, preset.limits, webhooks=True, s3_inputs=True))
    assert full["LoraSelection"]["properties"]["name"]["enum"] == [spec.name for spec in preset.loras]
    assert full["GenerateForm"]["properties"]["height"] == {
        "type": "integer",
        "minimum": preset.limits.min_side,
        "maximum": preset.limits.max_side,
        "multipleOf": 8,
        "description": "Output height in pixels, a multiple of 8.",
    }
