"""Gemini beyond the contract: Google's invalid-key answer (a 400), a prompt blocked for safety, and
Gemini as an edit backend (the shipped edit chain, a JPEG sent as one)."""

from __future__ import annotations

import pytest

from serve_app.backends.base import BackendAuthFailed
from serve_app.backends.providers.gemini import GeminiBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.gemini_stub import CASE, KEY, GeminiStub

SPEC = GenerationSpec(prompt="a desk", num_inference_steps=4, guidance_scale=7.0, height=512, width=896, seed=1)


async def test_googles_invalid_key_answer_is_a_rejected_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-wrong")
    clock = FakeClock()
    with GeminiStub() as stub:
        with pytest.raises(BackendAuthFailed) as caught:
            await GeminiBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep).generate(SPEC)
        assert len(stub.requests) == 1
    assert "API key not valid" in caught.value.message and "GEMINI_API_KEY" in caught.value.message


async def test_a_blocked_prompt_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    clock = FakeClock()
    with GeminiStub() as stub:
        stub.blocked = True
        with pytest.raises(UpstreamError) as caught:
            await GeminiBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep).generate(SPEC)
        aspect = stub.requests[-1].json()["generationConfig"]["imageConfig"]["aspectRatio"]
    assert caught.value.error_code == "UPSTREAM_REJECTED" and "SAFETY" in caught.value.message
    assert aspect == "16:9"


# -- Gemini in the edit chain --------------------------------------------------------------------------


def test_the_shipped_edit_chain_tries_gemini_after_the_editor() -> None:
    from pathlib import Path

    import yaml

    from serve_app.backends.config import BackendsConfig, edit_backends
    from serve_app.config import AppArgs

    config = yaml.safe_load((Path(__file__).parents[2] / "serve_config.yaml").read_text())
    args = AppArgs.model_validate(config["applications"][0]["args"])
    assert args.backends.chains["edit"] == ["local", "gemini", "openai:gpt-image-1"]
    assert BackendsConfig().chains["edit"] == ["local", "gemini", "openai:gpt-image-1"]
    assert "gemini" in edit_backends()


async def test_an_edit_of_a_jpeg_sends_it_as_image_jpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import io

    from PIL import Image

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    out = io.BytesIO()
    Image.new("RGB", (80, 48), (10, 20, 30)).save(out, format="JPEG")
    spec = SPEC.model_copy(update={"init_image_png": out.getvalue(), "image_guidance_scale": 1.5})
    clock = FakeClock()
    with GeminiStub() as stub:
        made = await GeminiBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep).generate(spec)
        image = stub.requests[-1].json()["contents"][0]["parts"][1]["inlineData"]
    assert image["mimeType"] == "image/jpeg" and base64.b64decode(image["data"]) == out.getvalue()
    with Image.open(io.BytesIO(made.image_png)) as answered:
        assert answered.size == (80, 48)  # the stub edits the image it was sent
    assert made.backend == "gemini" and "init_image" not in made.ignored and "image_guidance_scale" in made.ignored
