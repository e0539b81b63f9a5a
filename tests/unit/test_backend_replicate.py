"""Replicate beyond the contract: a failed prediction, a pinned version, and cancelling at Replicate
when the poll bound passes or the task is cancelled here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from serve_app.backends.providers.replicate import ReplicateBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.provider_base import stub_fetch
from testbed.stubs.replicate_stub import CASE, TOKEN, ReplicateStub

SPEC = GenerationSpec(prompt="a fabric", num_inference_steps=4, guidance_scale=7.0, height=512, width=512, seed=3)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicateStub]:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    with ReplicateStub() as running:
        yield running


def _backend(stub: ReplicateStub, clock: FakeClock, **update: object) -> ReplicateBackend:
    cfg = CASE.config(stub.base_url).model_copy(update=update)
    return ReplicateBackend(cfg, clock=clock, sleep=clock.sleep, fetch=stub_fetch())


def _cancels(stub: ReplicateStub) -> list[str]:
    return [r.path for r in stub.requests if r.path.endswith("/cancel")]


async def test_a_failed_prediction_says_replicates_error(stub: ReplicateStub) -> None:
    stub.add_rule("fail_job", times=1)
    with pytest.raises(UpstreamError) as caught:
        await _backend(stub, FakeClock()).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_ERROR" and "CUDA out of memory" in caught.value.message


async def test_a_pinned_version_is_created_with_version(stub: ReplicateStub) -> None:
    image = await _backend(stub, FakeClock(), model="owner/model:abc123").generate(SPEC)
    create = stub.requests[0]
    assert create.path == "/v1/predictions" and create.json()["version"] == "abc123"
    assert image.provider_request_id in stub.predictions


async def test_past_the_poll_bound_the_prediction_is_cancelled_at_replicate(stub: ReplicateStub) -> None:
    stub.hold = True
    with pytest.raises(UpstreamError) as caught:
        await _backend(stub, FakeClock(), max_poll_s=10, poll_interval_s=2).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_TIMEOUT"
    assert len(_cancels(stub)) == 1 and next(iter(stub.predictions.values()))["status"] == "canceled"


async def test_cancelling_the_task_cancels_the_prediction(stub: ReplicateStub) -> None:
    stub.hold = True
    backend = ReplicateBackend(
        CASE.config(stub.base_url).model_copy(update={"poll_interval_s": 0.01}), fetch=stub_fetch()
    )
    running = asyncio.ensure_future(backend.generate(SPEC))
    for _ in range(500):
        if any(r.method == "GET" for r in stub.requests):
            break
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(500):  # the cancel is shielded: it completes after the cancellation
        if _cancels(stub):
            break
        await asyncio.sleep(0.01)
    assert len(_cancels(stub)) == 1
