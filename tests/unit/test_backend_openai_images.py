"""OpenAI Images beyond the contract: the size each model takes, and gpt-image's body."""

from __future__ import annotations

import pytest

from serve_app.backends.providers.openai_images import OpenAIImagesBackend, openai_size
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.openai_stub import CASE, KEY, OpenAIStub
from tests.support.specs import txt2img


@pytest.mark.parametrize(
    ("model", "width", "height", "size"),
    [
        ("dall-e-3", 512, 512, "1024x1024"),
        ("dall-e-3", 1216, 704, "1792x1024"),
        ("dall-e-3", 512, 768, "1024x1792"),
        ("dall-e-2", 256, 256, "256x256"),
        ("dall-e-2", 1024, 512, "512x512"),
        ("gpt-image-1", 1024, 640, "1536x1024"),
    ],
)
def test_the_nearest_size_the_model_takes(model: str, width: int, height: int, size: str) -> None:
    assert openai_size(model, width, height) == size


async def test_gpt_image_is_not_sent_response_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    clock = FakeClock()
    spec = txt2img(negative_prompt="blurry", guidance_scale=7.0, height=640, width=1024)
    with OpenAIStub() as stub:
        cfg = CASE.config(stub.base_url).model_copy(update={"model": "gpt-image-1"})
        image = await OpenAIImagesBackend(cfg, clock=clock, sleep=clock.sleep).generate(spec)
        sent = stub.requests[-1].json()
    assert "response_format" not in sent and sent["size"] == "1536x1024"
    assert image.model == "gpt-image-1" and set(image.ignored) >= {"seed", "negative_prompt"}
