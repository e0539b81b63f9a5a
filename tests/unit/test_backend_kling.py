"""KLING beyond the contract: the JWT, a task that fails, KLING's codes in a 200, and the poll bound."""

from __future__ import annotations

import base64
import json

import pytest

from serve_app.backends.base import BackendAuthFailed
from serve_app.backends.cloud import nearest_aspect_ratio
from serve_app.backends.providers.kling import ASPECT_RATIOS, kling_jwt
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.kling_stub import ACCESS_KEY, CASE, SECRET_KEY, KlingStub, check_jwt
from testbed.stubs.provider_base import Reply

SPEC = GenerationSpec(prompt="a rainy cafe", num_inference_steps=4, guidance_scale=7.0, height=512, width=896, seed=1)


def test_the_jwt_is_hs256_with_kling_claims() -> None:
    token = kling_jwt("ak", "sk", now=1_000_000)
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert claims == {"iss": "ak", "exp": 1_001_800, "nbf": 999_995}
    assert check_jwt(f"Bearer {kling_jwt(ACCESS_KEY, SECRET_KEY)}") is None
    assert check_jwt(f"Bearer {kling_jwt(ACCESS_KEY, 'wrong')}") == "bad signature"


def test_aspect_ratio_is_the_nearest_kling_offers() -> None:
    assert nearest_aspect_ratio(896, 512, ASPECT_RATIOS) == "16:9"
    assert nearest_aspect_ratio(512, 512, ASPECT_RATIOS) == "1:1"
    assert nearest_aspect_ratio(512, 700, ASPECT_RATIOS) == "3:4"


async def test_a_wrong_secret_is_refused_by_kling_and_reported_as_a_key_error(
    case_stub: KlingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_SECRET_KEY", "not-the-secret")
    clock = FakeClock()
    with pytest.raises(BackendAuthFailed) as caught:
        await CASE.client(case_stub, clock).generate(SPEC)
    assert "1002" in caught.value.message or "Authorization" in caught.value.message


async def test_a_failed_task_is_refused_with_klings_reason(case_stub: KlingStub) -> None:
    case_stub.add_rule("fail_job", times=1)
    with pytest.raises(UpstreamError) as caught:
        await CASE.client(case_stub, FakeClock()).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_REJECTED" and "risk control" in caught.value.message


async def test_a_non_zero_code_in_a_200_is_an_error(case_stub: KlingStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        case_stub,
        "handle",
        lambda request, mode: Reply(200, {"code": 1102, "message": "Account balance not enough", "data": None}),
    )
    with pytest.raises(UpstreamError) as caught:
        await CASE.client(case_stub, FakeClock()).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_REJECTED" and "1102" in caught.value.message


async def test_a_task_still_running_past_max_poll_is_a_timeout(
    case_stub: KlingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = case_stub._task
    monkeypatch.setattr(case_stub, "_task", lambda task_id, status, msg="": original(task_id, "processing"))
    clock = FakeClock()
    with pytest.raises(UpstreamError) as caught:
        await CASE.client(case_stub, clock, max_poll_s=10, poll_interval_s=2).generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_TIMEOUT"
    assert 5 <= sum(1 for r in case_stub.requests if r.method == "GET") <= 7
