"""Stability beyond the contract: a content-moderation 403 is a refusal, not a bad key; a filtered image."""

from __future__ import annotations

import pytest

from serve_app.backends.providers.stability import StabilityBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.stability_stub import CASE, KEY, StabilityStub


def _spec(prompt: str) -> GenerationSpec:
    return GenerationSpec(prompt=prompt, num_inference_steps=4, guidance_scale=7.0, height=768, width=512, seed=9)


async def test_content_moderation_is_a_refused_prompt_and_seed_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", KEY)
    clock = FakeClock()
    with StabilityStub() as stub:
        backend = StabilityBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep)
        with pytest.raises(UpstreamError) as caught:
            await backend.generate(_spec("please moderate this"))
        assert caught.value.error_code == "UPSTREAM_REJECTED" and "content moderation" in caught.value.message
        image = await backend.generate(_spec("a desk"))
        assert image.seed == 9
        stub.filtered = True
        with pytest.raises(UpstreamError) as filtered:
            await backend.generate(_spec("a desk"))
    assert filtered.value.error_code == "UPSTREAM_REJECTED" and "CONTENT_FILTERED" in filtered.value.message
