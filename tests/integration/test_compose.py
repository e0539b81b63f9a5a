"""Gemini as the edit seed describes, over HTTP against the real Serve app and the provider stubs
(tests/integration/conftest.py): `POST /api/compose-dress` composes a person and a garment through
Gemini, and through OpenAI's multi-image edit when Gemini fails; an edit's rewrite reads the image."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from testbed.stubs.provider_base import make_png, multipart_all
from testbed.webhook_receiver import WebhookReceiver
from tests.integration.conftest import ServeApp, wait_for_task

pytestmark = pytest.mark.integration


PERSON = make_png(48, 80, (210, 160, 130))
GARMENT = make_png(40, 40, (30, 60, 190))
FILES = {"person_image": ("me.png", PERSON, "image/png"), "garment_image": ("dress.png", GARMENT, "image/png")}


@pytest.fixture
def client(serve_app: ServeApp) -> Iterator[httpx.Client]:
    with serve_app.client(timeout=120) as running:
        yield running
    for name in ("gemini", "openai"):
        serve_app.providers[name].reset()  # no failure rule outlives its test


def _image(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def test_a_person_and_a_garment_are_composed_by_gemini(serve_app: ServeApp, client: httpx.Client) -> None:
    gemini = serve_app.providers["gemini"]
    before = len(gemini.requests)
    response = client.post("/api/compose-dress", data={"prompt": "roll the sleeves up"}, files=FILES)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "gemini" and body["backend_model"] == "gemini-2.5-flash-image"
    assert body["prompt"] == "roll the sleeves up" and (body["width"], body["height"]) == (48, 80)
    assert _image(client, body["url"]).size == (48, 80)
    (sent,) = [r for r in gemini.requests[before:] if r.path.endswith(":generateContent")]
    text, person, garment = sent.json()["contents"][0]["parts"]
    assert text["text"].endswith("Also: roll the sleeves up")
    assert [base64.b64decode(p["inlineData"]["data"]) for p in (person, garment)] == [PERSON, GARMENT]
    result = wait_for_task(client, body["task_id"])
    assert result["status"] == "done" and result["processed_image_url"] == body["url"]
    assert "POST /api/compose-dress" in " ".join(client.get("/info").json()["endpoints"])


def test_when_gemini_fails_openais_multi_image_edit_composes(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.providers["gemini"].add_rule("server_error", times=None)
    openai = serve_app.providers["openai"]
    before = len(openai.requests)
    response = client.post("/api/compose-dress", files=FILES)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "openai" and body["backend_model"] == "gpt-image-1"
    assert [(f["backend"], f["error_code"]) for f in body["backends_failed"]] == [("gemini", "UPSTREAM_ERROR")]
    assert _image(client, body["url"]).format == "PNG"
    (sent,) = [r for r in openai.requests[before:] if r.path == "/v1/images/edits"]
    fields, files = multipart_all(sent)
    assert fields["model"] == "gpt-image-1" and files == [("image[]", PERSON), ("image[]", GARMENT)]


def test_a_compose_task_is_durable_with_its_webhook(serve_app: ServeApp, client: httpx.Client) -> None:
    with WebhookReceiver(secret=serve_app.webhook_secret()) as receiver:
        response = client.post(
            "/api/compose-dress",
            data={"webhook_url": receiver.url},
            files=FILES,
            headers={"Prefer": "respond-async"},
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        (delivery,) = receiver.wait_for(1, timeout=60)
        assert delivery.verified and delivery.json()["task_id"] == task_id
        assert delivery.json()["status"] == "done" and delivery.json()["backend"] == "gemini"
    events = client.get(f"/v1/tasks/{task_id}/events", headers={"Accept": "text/event-stream"})
    assert events.status_code == 200 and "event: result" in events.text and task_id in events.text


def _rewritten_edit(client: httpx.Client, instruction: str, width: int, height: int) -> dict[str, Any]:
    """An edit whose instruction is rewritten, on a photo of width x height; its answer."""
    response = client.post(
        "/v1/edits",
        data={"instruction": instruction, "rewrite": "true", "num_inference_steps": "2"},
        files={"image": ("desk.png", make_png(width, height, (180, 120, 60)), "image/png")},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_edit_rewrite_reads_the_image_through_gemini(serve_app: ServeApp, client: httpx.Client) -> None:
    """The analysis's improved prompt (which names the image the stub saw) reaches the Editor."""
    body = _rewritten_edit(client, "조명을 따뜻하게", 96, 64)
    assert body["backend"] == "local" and body["edit_prompt"].endswith("(96x64 image)")
    assert body["analysis"]["preserve"] == ["the person's face", "the background"]
    assert body["analysis"]["improved_prompt"] == body["edit_prompt"] and "analysis_fallback" not in body


def test_when_gemini_fails_the_edit_rewrite_falls_back_to_the_text(serve_app: ServeApp, client: httpx.Client) -> None:
    serve_app.providers["gemini"].add_rule("server_error", times=None)
    body = _rewritten_edit(client, "make the desk brighter", 64, 64)
    assert body["edit_prompt"] == "make the desk brighter" and body["analysis_fallback"].startswith("UPSTREAM_ERROR")
