"""Replicate beyond the contract: a failed prediction, a pinned version, and cancelling at Replicate
when the poll bound passes or the task is cancelled here."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.backends.providers.replicate import ReplicateBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.provider_base import stub_fetch
from testbed.stubs.replicate_stub import CASE, ReplicateStub

SPEC = GenerationSpec(prompt="a fabric", num_inference_steps=4, guidance_scale=7.0, height=512, width=512, seed=3)


def _cancels(case_stub: ReplicateStub) -> list[str]:
    return [r.path for r in case_stub.requests if r.path.endswith("/cancel")]


async def test_a_failed_prediction_says_replicates_error(case_stub: ReplicateStub) -> None:
    case_stub.add_rule("fail_job", times=1)
    with pytest.raises(UpstreamError) as caught:
        await CASE.client(case_stub, FakeClock()).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_ERROR" and "CUDA out of memory" in caught.value.message


async def test_a_pinned_version_is_created_with_version(case_stub: ReplicateStub) -> None:
    image = await CASE.client(case_stub, FakeClock(), model="owner/model:abc123").generate(SPEC)
    create = case_stub.requests[0]
    assert create.path == "/v1/predictions" and create.json()["version"] == "abc123"
    assert image.provider_request_id in case_stub.predictions


async def test_past_the_poll_bound_the_prediction_is_cancelled_at_replicate(case_stub: ReplicateStub) -> None:
    case_stub.hold = True
    with pytest.raises(UpstreamError) as caught:
        await CASE.client(case_stub, FakeClock(), max_poll_s=10, poll_interval_s=2).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_TIMEOUT"
    assert len(_cancels(case_stub)) == 1 and next(iter(case_stub.predictions.values()))["status"] == "canceled"


async def test_cancelling_the_task_cancels_the_prediction(case_stub: ReplicateStub) -> None:
    case_stub.hold = True
    backend = ReplicateBackend(
        CASE.config(case_stub.base_url).model_copy(update={"poll_interval_s": 0.01}), fetch=stub_fetch()
    )
    running = asyncio.ensure_future(backend.generate(SPEC))
    for _ in range(500):
        if any(r.method == "GET" for r in case_stub.requests):
            break
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(500):  # the cancel is shielded: it completes after the cancellation
        if _cancels(case_stub):
            break
        await asyncio.sleep(0.01)
    assert len(_cancels(case_stub)) == 1
