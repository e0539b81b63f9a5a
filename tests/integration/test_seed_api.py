"""Every request and response example of the seed's desk spec (desk-generate-api-spec.md), replayed
against the running app on the seed's own paths: the requests are sent as the seed writes them, byte
for byte (its trailing comma included), but for the two URLs that are its placeholders
(bucket.s3.amazonaws.com, myapp.com), which point at local servers here; the answers are checked
for the seed's shape, keys and status codes (ids and URLs differ, of course).

The session app runs without a configured webhook secret, as a fresh clone does: the webhook
example's signed POST verifies with the secret the app made in its data directory. The seed's 500
(`S3_UPLOAD_FAILED`) needs S3 down: test_webhooks_s3_naver.py's outage replays it on /s3/generate,
so the suite stops S3 once.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegen_client import verify_webhook
from serve_app.tasks.views import SeedResult
from testbed.harness import desk_photo
from testbed.webhook_receiver import WebhookReceiver
from tests.integration.conftest import ServeApp
from tests.support.http_server import StaticServer
from tests.support.seed_desk import (
    ACCEPTED_KEYS,
    BAD_REQUEST,
    INVALID,
    OFFER_KEYS,
    PHOTO,
    PHOTO_URL,
    POLLING,
    RESULT_KEYS,
    UPLOAD_FAILED,
    WEBHOOK,
    WEBHOOK_URL,
)

pytestmark = pytest.mark.integration

SEED_SPEC = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "desk-generate-api-spec.md"

JSON = {"content-type": "application/json"}


def test_the_examples_here_are_the_seeds_own() -> None:
    if not SEED_SPEC.exists():
        pytest.skip("the seed documents are not beside this checkout")
    text = SEED_SPEC.read_text(encoding="utf-8")
    lines = "\n".join(line.strip() for line in text.splitlines())
    for example in (PHOTO, POLLING, WEBHOOK):
        assert "\n".join(line.strip() for line in example.splitlines()) in lines, example
    for message in (BAD_REQUEST["detail"], INVALID["message"], UPLOAD_FAILED["message"]):
        assert f'"{message}"' in text, message


def _items(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The top-level keys that are items: the lists beside the fields."""
    return {k: v for k, v in body.items() if k not in SeedResult.model_fields and isinstance(v, list)}


def _check_done(body: dict[str, Any], with_photo: bool) -> None:
    assert body["status"] == "done", body
    assert RESULT_KEYS <= set(body)
    assert body["processed_image_url"] and body["image_url"] == body["processed_image_url"]
    assert (body["initial_image_url"] is not None) == with_photo
    items = _items(body)
    assert items and "recommendations" not in body, "the items are at the top level"
    for offers in items.values():
        assert len(offers) <= 3
        for offer in offers:
            assert set(offer) == OFFER_KEYS and offer["price"].endswith("원"), offer
    assert httpx.get(body["processed_image_url"], timeout=10).status_code == 200


def _submit(client: httpx.Client, raw: str, prefix: str = "") -> str:
    response = client.post(f"{prefix}/generate", content=raw.encode("utf-8"), headers=JSON)
    assert response.status_code == 200, response.text
    accepted = response.json()
    assert set(accepted) == ACCEPTED_KEYS and accepted["status"] == "queued"
    return accepted["task_id"]


def _poll(client: httpx.Client, task_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/result/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish")


def test_every_example_of_the_seed_replays(serve_app: ServeApp) -> None:
    client = serve_app.client()
    with StaticServer() as photos, WebhookReceiver(secret=serve_app.webhook_secret()) as receiver:
        photos.add("/images/12.png", desk_photo(), headers={"Content-Type": "image/jpeg"})
        local_photo = photos.url("/images/12.png")

        # 1. A desk photo and nothing else (no prompt: it is composed from the caption).
        photo_task = _submit(client, PHOTO.replace(PHOTO_URL, local_photo))
        # 2. Polling: a prompt and a negative prompt.
        polling_task = _submit(client, POLLING)
        # 3. A webhook: the app has no configured secret, yet signs it.
        webhook_task = _submit(client, WEBHOOK.replace(WEBHOOK_URL, receiver.url))

        photo = _poll(client, photo_task)
        _check_done(photo, with_photo=True)
        assert "a realistic photo of a desk setup" in photo["prompt"], "the desk templates wrote the prompt"
        _check_done(_poll(client, polling_task), with_photo=False)

        [delivery] = receiver.wait_for(1, timeout=120)
        assert delivery.verified, "signed with the secret the app made on first start"
        hooked = verify_webhook(serve_app.webhook_secret(), delivery.headers, delivery.body)
        assert hooked["task_id"] == webhook_task
        _check_done(hooked, with_photo=False)

    # 4. The seed's errors, in its bodies and status codes.
    empty = client.post("/generate", content=b'{"prompt": ""}', headers=JSON)
    assert (empty.status_code, empty.json()) == (400, BAD_REQUEST)
    negative = client.post("/generate", content=b'{"prompt": "a desk", "guidance_scale": -1}', headers=JSON)
    assert (negative.status_code, negative.json()) == (422, INVALID)
    huge = client.post("/generate", content=b'{"prompt": "a desk", "height": 8192, "width": 8192}', headers=JSON)
    assert huge.status_code == 422 and huge.json()["error_code"] == "INVALID_INPUT"

    # 5. The webhook secret: made on first start in the data directory, 0600; /info says where, not what.
    secret_file = serve_app.data_dir / "main" / "webhook_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    info = client.get("/info")
    assert info.json()["webhooks"]["enabled"] and info.json()["webhooks"]["secret_file"] == str(secret_file)
    assert serve_app.webhook_secret() not in info.text
