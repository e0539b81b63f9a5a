"""Hugging Face beyond the contract: the `estimated_time` of a loading model, and a server that is not there."""

from __future__ import annotations

import pytest

from serve_app.backends.providers.huggingface import HuggingFaceBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.huggingface_stub import CASE, TOKEN, HuggingFaceStub

SPEC = GenerationSpec(prompt="navy nylon", num_inference_steps=4, guidance_scale=7.0, height=64, width=64, seed=1)


async def test_a_loading_model_is_waited_for_as_long_as_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    clock = FakeClock()
    with HuggingFaceStub() as stub:
        stub.add_rule("loading", times=1)  # no Retry-After: only the body's estimated_time (20 s)
        backend = HuggingFaceBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep)
        image = await backend.generate(SPEC)
    assert image.attempts == 2 and any(seconds >= 20 for seconds in clock.sleeps)


async def test_a_server_that_is_not_there_is_retried_then_an_upstream_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HuggingFaceStub() as stub:
        url = stub.base_url
    clock = FakeClock()
    cfg = CASE.config(url).model_copy(update={"max_retries": 2})
    backend = HuggingFaceBackend(cfg, clock=clock, sleep=clock.sleep)
    with pytest.raises(UpstreamError) as caught:
        await backend.generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_ERROR" and backend.http.attempts == 3
