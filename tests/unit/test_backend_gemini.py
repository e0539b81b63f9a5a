"""Gemini beyond the contract: Google's invalid-key answer (a 400) and a prompt blocked for safety."""

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
