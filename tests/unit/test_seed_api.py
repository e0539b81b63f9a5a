"""The seed's own desk API beside v1 (POST /generate, GET /result/{task_id}) in-process: lenient
bodies, the seed's error bodies, a desk photo without a prompt on both surfaces, the seed's flat
result shape and its collision rule, and the webhook body's `image_url`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api.deps import IngressContext
from serve_app.errors import InvalidInput
from serve_app.ingress import app
from serve_app.products.desk.seed import EXAMPLES, lenient_json_object
from serve_app.tasks.records import TaskRecord, TaskStatus
from serve_app.tasks.views import seed_body, task_view, webhook_body
from serve_app.webhook_secret import CLUSTER_NEEDS_A_SECRET, WebhookSecret
from tests.support.ingress import ingress_context, multipart, png

OFFER = {
    "title": "t",
    "price": "21990원",
    "mall": "네이버",
    "category3": "마우스",
    "category4": "유선마우스",
    "link": "l",
    "image": "i",
}
SECRET = WebhookSecret("whsec_c2VjcmV0", "file", path="/var/webhook_secret")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, {}, webhook_secret=SECRET, fetch={"allow_hosts": ["127.0.0.1"]}) as context:
        yield context


@pytest.fixture
def client(ctx: IngressContext) -> TestClient:
    return TestClient(app)


def test_the_seeds_examples_are_read_as_written_trailing_comma_included() -> None:
    assert lenient_json_object(EXAMPLES["photo"].encode()) == {
        "initial_image_url": "https://bucket.s3.amazonaws.com/images/12.png"
    }
    assert lenient_json_object(b'{"a": [1, 2,], "b": "x,}",\n}') == {"a": [1, 2], "b": "x,}"}
    assert lenient_json_object(b'{"a": "\\",}"}') == {"a": '",}'}
    for bad in (b'{"a": 1,,}', b'{"a" 1}', b"[1,]", b"\xff"):
        with pytest.raises(InvalidInput, match="JSON|object"):
            lenient_json_object(bad)


def test_seed_submit_answers_the_seeds_body_and_records_a_seed_task(client: TestClient, ctx: IngressContext) -> None:
    response = client.post(
        "/generate", content=EXAMPLES["polling"].encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"task_id", "status"} and body["status"] == "queued"
    assert response.headers["location"] == f"/result/{body['task_id']}"
    record = ctx.tasks.require(body["task_id"])
    assert record.kind == "desk" and record.request["surface"] == "seed"
    assert record.request["negative_prompt"] == "people, cartoon, blurry"
    polled = client.get(f"/result/{body['task_id']}").json()
    assert polled["status"] == "queued" and "recommendations" not in polled


def test_seed_bodies_are_lenient_unknown_fields_and_nulls(client: TestClient, ctx: IngressContext) -> None:
    body = {
        "prompt": "a desk",
        "negativePrompt": "ignored: not a field",
        "negative_prompt": None,
        "seed": None,
        "user_id": None,
        "lora": {"name": "cozy-wood", "scale": None, "weight": 3},
        "extra": {"nested": [1, None]},
    }
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    request = ctx.tasks.require(response.json()["task_id"]).request
    assert request["user_id"] == "anonymous" and request["negative_prompt"] is None
    assert request["lora"]["name"] == "cozy-wood" and isinstance(request["seed"], int)
    parts = [("prompt", None, b"a desk"), ("x", None, b"1"), ("x", None, b"2"), ("seed", None, b"3")]
    content, headers = multipart(parts)
    form = client.post("/generate", content=content, headers=headers)
    assert form.status_code == 200 and ctx.tasks.require(form.json()["task_id"]).request["seed"] == 3
    blank_urls = client.post("/generate", json={"prompt": "a desk", "initial_image_url": "", "webhook_url": ""})
    assert blank_urls.status_code == 200, "an empty URL is a URL left out"
    strict = client.post("/v1/generate", json=body)
    assert strict.status_code == 422, "v1 stays strict"


def test_the_seeds_error_bodies(client: TestClient) -> None:
    empty = client.post("/generate", json={"prompt": ""})
    assert empty.status_code == 400 and empty.json() == {"detail": "Prompt must not be empty."}
    no_prompt = client.post("/generate", json={"prompt": None})
    assert no_prompt.status_code == 400 and no_prompt.json() == {"detail": "Prompt must not be empty."}
    negative = client.post("/generate", json={"prompt": "a desk", "guidance_scale": -1})
    assert negative.status_code == 422
    assert negative.json() == {"error_code": "INVALID_INPUT", "message": "Guidance scale cannot be negative."}
    big = client.post("/generate", json={"prompt": "a desk", "height": 8192})
    assert big.status_code == 422 and big.json()["error_code"] == "INVALID_INPUT"
    assert client.post("/generate", content=b"[1]", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/result/nope").status_code == 404


@pytest.mark.parametrize("path", ["/generate", "/v1/generate"])
def test_a_desk_photo_without_a_prompt_is_valid_on_both_surfaces(
    client: TestClient, ctx: IngressContext, path: str
) -> None:
    response = client.post(path, files={"image": ("d.png", png(), "image/png")})
    assert response.status_code in (200, 202), response.text
    assert ctx.tasks.require(response.json()["task_id"]).request["prompt"] == ""


def test_an_explicit_empty_prompt_stays_400_on_v1_even_with_a_photo(client: TestClient) -> None:
    form = client.post("/v1/generate", data={"prompt": ""}, files={"image": ("d.png", png(), "image/png")})
    assert form.status_code == 400 and form.json() == {"detail": "Prompt must not be empty."}
    text = client.post("/v1/generate", json={"prompt": "  "})
    assert text.status_code == 400
    no_photo = client.post("/v1/generate", json={"seed": 1})
    assert no_photo.status_code == 400, "without a photo there is no caption to write a prompt from"


def test_seed_routes_are_documented_as_lenient(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["SeedGenerateRequest"]
    assert request["additionalProperties"] is True and "leniently" in request["description"]
    assert all(
        prop.get("type") == "null" or any(b.get("type") == "null" for b in prop.get("anyOf", []))
        for prop in request["properties"].values()
    ), "every field may be null"
    assert schema["components"]["schemas"]["GenerateRequest"]["additionalProperties"] is False, "v1 stays strict"
    assert {"/generate", "/result/{task_id}"} <= set(schema["paths"])
    info = client.get("/info").json()
    assert any(line.startswith("POST /generate") for line in info["endpoints"])


def _record(result: dict[str, Any] | None, status: TaskStatus = TaskStatus.done, surface: str = "v1") -> TaskRecord:
    now = time.time()
    return TaskRecord(
        task_id="t1",
        kind="desk",
        status=status,
        request={"prompt": "", "surface": surface},
        initial_image_url="http://t/files/a.png",
        created_at=now,
        updated_at=now,
        available_at=now,
        result=result,
    )


def test_seed_shape_puts_items_at_the_top_level_and_a_field_wins_a_name_collision() -> None:
    result = {
        "processed_image_url": "http://t/files/b.png",
        "caption": "a desk",
        "recommendations": {"마우스": [OFFER], "키보드": [], "caption": [OFFER], "status": [OFFER]},
    }
    body = seed_body(task_view(_record(result)))
    assert body["status"] == "done" and body["initial_image_url"] == "http://t/files/a.png"
    assert body["processed_image_url"] == body["image_url"] == "http://t/files/b.png"
    assert body["마우스"] == [OFFER] and body["키보드"] == []
    assert body["caption"] == "a desk" and body["status"] == "done", "the v1 field wins"
    assert body["recommendations"] == {"caption": [OFFER], "status": [OFFER]}, "the items that collide move there"
    alone = seed_body(task_view(_record({"recommendations": {"마우스": [OFFER]}, "generation_skipped": "not_a_desk"})))
    assert "recommendations" not in alone and alone["processed_image_url"] is None and alone["image_url"] is None
    running = seed_body(task_view(_record(None, TaskStatus.processing)))
    assert running["status"] == "processing" and "processed_image_url" not in running


def test_the_webhook_body_carries_image_url_in_the_shape_it_was_submitted_in() -> None:
    result = {"processed_image_url": "http://t/files/b.png", "recommendations": {"마우스": [OFFER]}}
    v1 = webhook_body(_record(result))
    assert v1["image_url"] == "http://t/files/b.png" and v1["recommendations"] == {"마우스": [OFFER]}
    seed = webhook_body(_record(result, surface="seed"))
    assert seed["image_url"] == "http://t/files/b.png" and seed["마우스"] == [OFFER] and "recommendations" not in seed
    assert "image_url" not in webhook_body(_record({"generation_skipped": "not_a_desk"}))


def test_info_says_where_the_secret_lives_never_the_secret(client: TestClient) -> None:
    webhooks = client.get("/info").json()["webhooks"]
    assert webhooks["enabled"] is True and webhooks["secret_file"] == "/var/webhook_secret"
    assert "c2VjcmV0" not in client.get("/info").text


def test_the_cluster_profile_refuses_a_webhook_url_saying_what_to_set(tmp_path: Path) -> None:
    off = WebhookSecret(None, "none", off_because=CLUSTER_NEEDS_A_SECRET)
    with ingress_context(tmp_path, {}, webhook_secret=off):
        client = TestClient(app)
        response = client.post(
            "/generate", content=EXAMPLES["webhook"].encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and response.json()["error_code"] == "WEBHOOKS_DISABLED"
        assert "IMAGEGEN_WEBHOOK_SECRET" in response.json()["message"]
        assert client.get("/info").json()["webhooks"]["enabled"] is False
