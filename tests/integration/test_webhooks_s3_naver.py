"""Webhook delivery with retries; the S3 backend on SeaweedFS with an outage; the Naver provider via its stub."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image

from testbed.harness import desk_photo
from testbed.webhook_receiver import WebhookReceiver
from tests.integration.conftest import ServeApp, wait_for_task
from tests.support.http_server import StaticServer
from tests.support.seed_desk import PHOTO, PHOTO_URL, UPLOAD_FAILED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> httpx.Client:
    return serve_app.client()


def test_webhook_is_retried_signed_and_keeps_its_id(serve_app: ServeApp, client: httpx.Client) -> None:
    with WebhookReceiver(secret=serve_app.webhook_secret()) as receiver:
        receiver.fail_first(2, status=500)
        response = client.post(
            "/v1/generate",
            json={"prompt": "a desk for the webhook", "num_inference_steps": 2, "webhook_url": receiver.url},
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        receiver.wait_for(3, timeout=60)
        deliveries = receiver.deliveries
        assert len(deliveries) == 3
        assert [d.status for d in deliveries] == [500, 500, 204]
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1
        assert all(d.verified for d in deliveries), "every attempt carries a valid signature"
        body = deliveries[-1].json()
        assert body["task_id"] == task_id and body["status"] == "done" and body["processed_image_url"]
    record = wait_for_task(client, task_id)
    assert record["status"] == "done"


def test_s3_storage_round_trip(serve_app: ServeApp, client: httpx.Client) -> None:
    response = client.post("/s3/v1/generate", json={"prompt": "a desk in the cloud", "num_inference_steps": 2})
    assert response.status_code == 202, response.text
    result = wait_for_task(client, response.json()["task_id"], prefix="/s3")
    assert result["status"] == "done", result
    url = result["processed_image_url"]
    assert url.startswith(serve_app.seaweed.endpoint_url) and "X-Amz-Signature" in url
    image = Image.open(io.BytesIO(httpx.get(url, timeout=10).content))
    assert image.size == (64, 64)


def test_s3_outage_fails_the_task_and_recovers(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.seaweed.stop()
    try:
        response = client.post("/s3/v1/generate", json={"prompt": "a desk during an outage", "num_inference_steps": 2})
        assert response.status_code == 202, response.text
        result = wait_for_task(client, response.json()["task_id"], prefix="/s3")
        assert result["status"] == "failed"
        assert result["error_code"] == "S3_UPLOAD_FAILED" and result["message"] == "Failed to upload image to S3."
        health = client.get("/s3/healthcheck")
        assert health.status_code == 503 and health.json()["storage"] != "ok"
        upload = client.post(
            "/s3/v1/generate",
            data={"prompt": "a desk"},
            files={"image": ("d.png", _png(), "image/png")},
        )
        assert upload.status_code == 500
        assert upload.json() == UPLOAD_FAILED
        # The seed's photo example on its own path: the same 500, in its shape (test_seed_api.py).
        with StaticServer() as photos:
            photos.add("/images/12.png", desk_photo(), headers={"Content-Type": "image/jpeg"})
            raw = PHOTO.replace(PHOTO_URL, photos.url("/images/12.png")).encode()
            seed = client.post("/s3/generate", content=raw, headers={"content-type": "application/json"})
        assert (seed.status_code, seed.json()) == (500, UPLOAD_FAILED)
    finally:
        serve_app.seaweed.start()
    deadline = time.monotonic() + 60
    while client.get("/s3/healthcheck").status_code != 200:
        assert time.monotonic() < deadline, "storage did not come back"
        time.sleep(0.5)
    response = client.post("/s3/v1/generate", json={"prompt": "a desk after the outage", "num_inference_steps": 2})
    assert wait_for_task(client, response.json()["task_id"], prefix="/s3")["status"] == "done"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_not_a_desk_still_returns_naver_offers(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.naver.reset()
    response = client.post(
        "/s3/v1/generate",
        data={"prompt": "my desk with a keyboard and a monitor", "num_inference_steps": "2"},
        files={"image": ("d.png", _png(), "image/png")},
    )
    assert response.status_code == 202, response.text
    result = wait_for_task(client, response.json()["task_id"], prefix="/s3")
    assert result["status"] == "done", result
    assert result["is_desk"] is False and result["generation_skipped"] == "not_a_desk"
    assert "processed_image_url" not in result
    offers = result["recommendations"]["키보드"]
    assert offers and all("<b>" not in offer["title"] for offer in offers)
    assert offers[0]["price"].endswith("원")
    assert serve_app.naver.request_count >= 2


def test_naver_rate_limit_recovers(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.naver.reset()
    serve_app.naver.set_mode("rate_limit", times=2)
    response = client.post("/s3/v1/generate", json={"prompt": "a desk with a mouse", "num_inference_steps": 2})
    result = wait_for_task(client, response.json()["task_id"], prefix="/s3")
    assert result["status"] == "done", result
    assert result["recommendations"]["마우스"], "429s were retried and the search recovered"
    assert not result.get("recommendation_errors")


def test_naver_bad_credentials_give_a_clear_error_in_the_result(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.naver.reset()
    serve_app.naver.set_mode("unauthorized")
    try:
        response = client.post("/s3/v1/generate", json={"prompt": "a desk with a mouse", "num_inference_steps": 2})
        result = wait_for_task(client, response.json()["task_id"], prefix="/s3")
    finally:
        serve_app.naver.set_mode("ok")
    assert result["status"] == "done", result
    assert result["recommendations"]["마우스"] == []
    assert "CONFIGURATION_ERROR" in result["recommendation_errors"]["마우스"]
