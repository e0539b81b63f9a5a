"""Standard Webhooks (https://www.standardwebhooks.com) signing, verification and retried delivery.

Each POST carries `webhook-id` (the same on every retry, so receivers can deduplicate),
`webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`:
`v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")).

The secret (env IMAGEGEN_WEBHOOK_SECRET) is read as the Standard Webhooks reference libraries read
it: an optional `whsec_` prefix, then the key in base64, padded or not. An empty key, or one that
is not base64, is a configuration error (a receiver using a reference library could never verify it).
A sender without a secret cannot be built (ConfigurationError): build it only when a task has a
webhook_url, so a deployment without webhooks needs no secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, Field

from serve_app import net
from serve_app.errors import ConfigurationError, UnsafeURL
from serve_app.net import FetchPolicy


class WebhookReplayConfig(BaseModel):
    """Bounds of `POST /v1/tasks/{task_id}/webhook`: each replay makes the server POST to a URL the
    caller chose, and keeps the task's delivery pending."""

    per_caller_per_minute: int = Field(
        default=10,
        ge=1,
        description="Replays one caller (its API key; its client address with keys off) may ask for in a "
        "rolling minute; past it 429 REPLAY_RATE_LIMITED with Retry-After.",
    )
    max_per_task: int = Field(
        default=5,
        ge=0,
        description="Replays of one task in all (0: none); past it 429 REPLAY_LIMIT_REACHED, Retry-After "
        "saying when the task expires.",
    )


class WebhookConfig(BaseModel):
    """Retries of one webhook: with the defaults, 2 s doubling to 5 min over 10 attempts, a receiver
    may be down for at least 6.75 min (13.5 min nominal) and still get the result."""

    max_attempts: int = Field(default=10, ge=1)
    base_delay_s: float = Field(default=2.0, gt=0)
    max_delay_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    replay: WebhookReplayConfig = Field(default_factory=WebhookReplayConfig)


log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
USER_AGENT = "imagegen-serve-webhooks/0.1"


class WebhookVerificationError(Exception):
    """A webhook's signature or timestamp did not verify."""


class DeliveryResult(BaseModel):
    """Outcome of one `WebhookSender.deliver` call (all its attempts)."""

    delivered: bool
    attempts: int
    last_status: int | None = None
    last_error: str | None = None


class AttemptResult(BaseModel):
    """Outcome of one POST to a webhook URL."""

    delivered: bool
    retryable: bool = Field(description="A later attempt may succeed (5xx, 408/409/425/429, no answer).")
    last_status: int | None = None
    last_error: str | None = None
    error_code: str | None = Field(
        default=None, description="Why it failed, as a metric tag: HTTP_<status>, UNSAFE_URL, an exception's name."
    )
    retry_after_s: float | None = Field(default=None, description="The receiver's Retry-After (429/503).")

    def summary(self, attempts: int) -> DeliveryResult:
        return DeliveryResult(
            delivered=self.delivered, attempts=attempts, last_status=self.last_status, last_error=self.last_error
        )


def secret_bytes(secret: str) -> bytes:
    """HMAC key of a secret: `whsec_` prefix optional, base64 with or without padding, never empty."""
    encoded = (secret or "").strip().removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ConfigurationError("The webhook secret is empty.")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(
            "The webhook secret is not base64: give it as whsec_<base64 key> (prefix and padding optional)."
        ) from exc
    if not key:
        raise ConfigurationError("The webhook secret is empty.")
    return key


def make_msg_id(task_id: str) -> str:
    """Deterministic message id of a task's result webhook, so a redelivery after restart keeps it."""
    return f"msg_{task_id}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) of one message."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless one of the `v1` signatures matches and the timestamp is fresh."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError("Invalid webhook-timestamp.") from exc
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("Message timestamp too old.")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("Message timestamp too new.")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return
    raise WebhookVerificationError("No matching signature found.")


def _retry_after_s(response: httpx.Response, now: float) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class WebhookSender:
    """Delivers signed JSON to webhook URLs, retrying with exponential backoff and equal jitter.

    2xx: delivered. 5xx, 408, 409, 425, 429, timeouts and connection errors: retried up to
    `config.max_attempts` attempts in all, waiting d/2 + rand() * d/2 with d = min(max_delay_s,
    base_delay_s * 2**n), or
    Retry-After (capped at max_delay_s) on 429/503. Other statuses (4xx, unfollowed 3xx) and refused
    URLs stop at once. `sleep`, `rand` and `clock` are injectable for tests.
    """

    def __init__(
        self,
        config: WebhookConfig,
        secret: str | None,
        policy: FetchPolicy,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        *,
        clock: Callable[[], float] = time.time,
        resolver: net.Resolver | None = None,
    ) -> None:
        if not secret:
            raise ConfigurationError(
                "Webhooks need a signing secret: set IMAGEGEN_WEBHOOK_SECRET (whsec_<base64> or a raw string).",
                error_code="WEBHOOK_SECRET_MISSING",
            )
        secret_bytes(secret)  # fail now on a malformed whsec_ value
        self.config = config
        self._secret = secret
        self._policy = policy
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._resolver = resolver

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number `retry` (0 for the first retry): "equal jitter", half the capped
        exponential delay plus a random share of the other half. Full jitter (0 to the cap) spreads
        retries as well but can spend every attempt within seconds, so a receiver down for a
        minute never got its result; this keeps at least half of the nominal window."""
        cap = min(self.config.max_delay_s, self.config.base_delay_s * (2**retry))
        return cap / 2 + self._rand() * cap / 2

    async def attempt(self, url: str, msg_id: str, payload: dict[str, Any]) -> AttemptResult:
        """One signed POST of `payload` (a fresh timestamp and signature, the same `msg_id`)."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, msg_id, timestamp, body),
        }
        try:
            response = await net.post_json(
                url, body, headers, self._policy, self.config.timeout_s, resolver=self._resolver
            )
        except UnsafeURL as exc:
            log.warning("webhook %s refused: %s", msg_id, exc.message)
            return AttemptResult(delivered=False, retryable=False, last_error=exc.message, error_code=exc.error_code)
        except (httpx.TransportError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return AttemptResult(delivered=False, retryable=True, last_error=error, error_code=type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return AttemptResult(delivered=True, retryable=False, last_status=status)
        retryable = status >= 500 or status in RETRYABLE_4XX
        if not retryable:
            log.warning("webhook %s permanently failed with HTTP %s", msg_id, status)
        retry_after = _retry_after_s(response, self._clock()) if status in (429, 503) else None
        return AttemptResult(
            delivered=False,
            retryable=retryable,
            last_status=status,
            last_error=f"HTTP {status}",
            error_code=f"HTTP_{status}",
            retry_after_s=retry_after,
        )

    def delay_after(self, attempts_made: int, result: AttemptResult) -> float:
        """How long to wait after `attempts_made` attempts, the last one `result`: its Retry-After
        (capped at max_delay_s) or the backoff."""
        if result.retry_after_s is not None:
            return min(self.config.max_delay_s, result.retry_after_s)
        return self.backoff_s(attempts_made - 1)

    async def deliver(self, url: str, msg_id: str, payload: dict[str, Any]) -> DeliveryResult:
        """POST `payload` to `url` until delivered, permanently refused, or out of attempts, waiting
        in this coroutine between attempts (the TaskRunner instead schedules each retry in the task
        store, so a long outage survives a restart: see `deployments.task_runner`)."""
        result = AttemptResult(delivered=False, retryable=True)
        for attempt in range(1, self.config.max_attempts + 1):
            result = await self.attempt(url, msg_id, payload)
            if result.delivered or not result.retryable:
                return result.summary(attempt)
            if attempt < self.config.max_attempts:
                delay = self.delay_after(attempt, result)
                log.info(
                    "webhook %s attempt %d failed (%s); retrying in %.2f s", msg_id, attempt, result.last_error, delay
                )
                await self._sleep(delay)
        return result.summary(self.config.max_attempts)
