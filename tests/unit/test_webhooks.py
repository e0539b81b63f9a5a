"""Standard Webhooks signing/verification and retried delivery (serve_app.webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest

from serve_app.errors import ConfigurationError
from serve_app.net import FetchPolicy
from serve_app.webhooks import (
    WebhookConfig,
    WebhookSender,
    WebhookVerificationError,
    make_msg_id,
    secret_bytes,
    sign,
    verify,
)
from testbed.webhook_receiver import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOCAL = FetchPolicy(allow_hosts=["127.0.0.1"])
NOW = 1_700_000_000.0


def independent_signature(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    mac = hmac.new(key, msg_id.encode() + b"." + str(ts).encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_published_vector() -> None:
    """The test vector of the Standard Webhooks reference libraries."""
    sig = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        (SECRET, base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),  # no prefix
        ("whsec_YWJjZA", b"abcd"),  # unpadded
        ("whsec_YWJjZA==", b"abcd"),  # padded
        ("YWJjZA", b"abcd"),
        (" whsec_YWJjZA==\n", b"abcd"),  # as pasted into an env file
    ],
)
def test_sign_matches_independent_hmac(secret: str, key: bytes) -> None:
    body = json.dumps({"task_id": "t1", "caption": "책상"}, ensure_ascii=False).encode()
    assert secret_bytes(secret) == key
    assert sign(secret, "msg_t1", 1700000000, body) == independent_signature(key, "msg_t1", 1700000000, body)


def test_verify_accepts_and_rejects() -> None:
    body = b'{"a":1}'
    good = sign(SECRET, "msg_1", int(NOW), body)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(NOW)), "Webhook-Signature": good}
    verify(SECRET, headers, body, now=NOW)
    # several space-separated signatures (key rotation): any match is enough
    verify(SECRET, {**headers, "Webhook-Signature": f"v1,bm90LWl0 {good}"}, body, now=NOW)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, headers, b'{"a":2}', now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + base64.b64encode(b"other").decode(), headers, body, now=NOW)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(SECRET, headers, body, now=NOW + 301)
    verify(SECRET, headers, body, now=NOW + 299)
    with pytest.raises(WebhookVerificationError, match="new"):
        verify(SECRET, headers, body, now=NOW - 301)
    with pytest.raises(WebhookVerificationError, match="Missing"):
        verify(SECRET, {"webhook-id": "msg_1"}, body, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, {**headers, "Webhook-Signature": good.replace("v1,", "v2,")}, body, now=NOW)


def test_reference_vector_without_the_prefix() -> None:
    """The reference libraries accept the same key with and without `whsec_`; so do we."""
    sig = sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret", ["", "   ", "whsec_", "whsec_!!!not-base64!!!", "plain-secret-ü", "whsec_===="])
def test_bad_secrets(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        secret_bytes(secret)


def test_a_sender_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError):
        WebhookSender(WebhookConfig(), None, LOCAL)
    with pytest.raises(ConfigurationError):
        WebhookSender(WebhookConfig(), "", LOCAL)


def test_msg_id_is_deterministic() -> None:
    assert make_msg_id("abc") == make_msg_id("abc") == "msg_abc"
    assert make_msg_id("abc") != make_msg_id("abd")


# --- delivery against a real local receiver ---------------------------------------------------


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    """Each call a second later, so every attempt gets its own timestamp."""

    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        self.t += 1
        return self.t


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as rx:
        yield rx


def make_sender(sleep: FakeSleep, **config: float) -> WebhookSender:
    cfg = WebhookConfig(**{"max_attempts": 5, "base_delay_s": 1.0, "max_delay_s": 60.0, "timeout_s": 5.0, **config})
    # rand=1.0 makes full jitter return its cap, so the exponential schedule is visible
    return WebhookSender(cfg, SECRET, LOCAL, sleep=sleep, rand=lambda: 1.0, clock=FakeClock())


async def test_retries_until_accepted(receiver: WebhookReceiver) -> None:
    receiver.fail_first(2, 500)
    sleep = FakeSleep()
    payload = {"task_id": "t-1", "status": "done", "caption": "나무 책상 위의 키보드"}
    result = await make_sender(sleep).deliver(receiver.url, make_msg_id("t-1"), payload)
    assert result.delivered and result.attempts == 3 and result.last_status == 204
    deliveries = receiver.wait_for(3, timeout=5)
    assert [d.status for d in deliveries] == [500, 500, 204]
    assert {d.headers["webhook-id"] for d in deliveries} == {"msg_t-1"}
    assert len({d.headers["webhook-timestamp"] for d in deliveries}) == 3
    assert len({d.headers["webhook-signature"] for d in deliveries}) == 3
    assert all(d.verified for d in deliveries)
    assert deliveries[0].json() == payload
    assert "나무".encode() in deliveries[0].body  # ensure_ascii=False, UTF-8
    assert deliveries[0].headers["content-type"].startswith("application/json")
    assert sleep.delays == [1.0, 2.0]


async def test_backoff_is_capped_and_jittered(receiver: WebhookReceiver) -> None:
    receiver.fail_first(10, 503)
    sleep = FakeSleep()
    result = await make_sender(sleep, max_attempts=6, max_delay_s=5.0).deliver(receiver.url, "msg_x", {})
    assert not result.delivered and result.attempts == 6 and result.last_status == 503
    assert result.last_error == "HTTP 503"
    assert len(receiver.deliveries) == 6
    assert sleep.delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = WebhookSender(WebhookConfig(base_delay_s=2.0), SECRET, LOCAL, rand=lambda: 0.25)
    assert jittered.backoff_s(0) == 1.25 and jittered.backoff_s(3) == 10.0, "at least half the nominal delay"
    assert WebhookSender(WebhookConfig(), SECRET, LOCAL, rand=lambda: 0.0).backoff_s(0) == 1.0


def test_default_retries_outlast_a_receiver_down_for_minutes() -> None:
    least = WebhookSender(WebhookConfig(), SECRET, LOCAL, rand=lambda: 0.0)
    window = sum(least.backoff_s(retry) for retry in range(WebhookConfig().max_attempts - 1))
    assert window >= 6 * 60, f"the shortest retry window is only {window:.0f} s"


async def test_permanent_4xx_stops(receiver: WebhookReceiver) -> None:
    receiver.fail_first(5, 400)
    sleep = FakeSleep()
    result = await make_sender(sleep).deliver(receiver.url, "msg_y", {"a": 1})
    assert not result.delivered and result.attempts == 1 and result.last_status == 400
    assert sleep.delays == []
    assert len(receiver.deliveries) == 1


@pytest.mark.parametrize("status", [408, 409, 425, 429])
async def test_retryable_4xx(receiver: WebhookReceiver, status: int) -> None:
    receiver.fail_first(1, status)
    result = await make_sender(FakeSleep()).deliver(receiver.url, "msg_z", {})
    assert result.delivered and result.attempts == 2


async def test_retry_after_is_honoured_and_bounded(receiver: WebhookReceiver) -> None:
    receiver.fail_first(1, 429, {"Retry-After": "7"})
    sleep = FakeSleep()
    assert (await make_sender(sleep).deliver(receiver.url, "m1", {})).delivered
    assert sleep.delays == [7.0]
    receiver.fail_first(1, 503, {"Retry-After": "3600"})
    sleep = FakeSleep()
    assert (await make_sender(sleep, max_delay_s=30.0).deliver(receiver.url, "m2", {})).delivered
    assert sleep.delays == [30.0]


async def test_connection_errors_are_retried_up_to_max_attempts() -> None:
    from testbed.seaweed import free_ports

    (port,) = free_ports(1)
    sleep = FakeSleep()
    result = await make_sender(sleep, max_attempts=3).deliver(f"http://127.0.0.1:{port}/hook", "m", {})
    assert not result.delivered and result.attempts == 3 and result.last_status is None
    assert result.last_error and "Connect" in result.last_error
    assert len(sleep.delays) == 2


async def test_unsafe_url_is_not_retried() -> None:
    sleep = FakeSleep()
    sender = WebhookSender(WebhookConfig(), SECRET, FetchPolicy(), sleep=sleep)
    result = await sender.deliver("http://169.254.169.254/latest", "m", {})
    assert not result.delivered and result.attempts == 1 and "link-local" in (result.last_error or "")
    assert sleep.delays == []
