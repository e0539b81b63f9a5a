"""The HTTP side every cloud image backend shares: a rate-limited, retrying call to a provider.

- Every request first waits on the provider's client-side token bucket (`rate_limit_per_minute`).
- 429 and 503 (Hugging Face's "model is loading", overload elsewhere), 502 and 504 are retried
  with exponential backoff that waits at least what `Retry-After` (or a provider hint such as
  Hugging Face's `estimated_time`) asked, capped by `max_retry_wait_s`, at most `max_retries` times.
- A connection that never opened is retried; a timed-out POST is not (the provider may have
  started the job and would charge twice), a timed-out GET is.
- 401/403: `BackendAuthFailed`, never retried. Other 4xx: UPSTREAM_REJECTED with the provider's
  own message (content policy, bad size). Other 5xx: UPSTREAM_ERROR. The provider's words are
  redacted (`serve_app.redact`, the configured keys too) before they go into any message.
- An image at a URL the provider answers is fetched as a user's URL is (`serve_app.net`): http(s)
  only, no private target unless `fetch.allow_hosts` lists it, pinned addresses, a byte cap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx

from serve_app.backends.base import BackendAuthFailed
from serve_app.backends.provider import CloudBackendConfig
from serve_app.errors import AppError, ImageFetchFailed, PayloadTooLarge, UnsafeURL, UpstreamError
from serve_app.net import FetchPolicy, UnresolvableHost, fetch_bytes
from serve_app.redact import redact
from serve_app.retry import parse_retry_after
from serve_app.settings import env_choice, spelled
from serve_app.shopping.ratelimit import AsyncTokenBucket

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
T = TypeVar("T")


def error_message(response: httpx.Response, secrets: Iterable[str] = ()) -> str:
    """The provider's own words from an error body, whatever its shape, redacted (`secrets` too),
    first 300 characters.

    Understood: OpenAI/Gemini `{"error": {"message"}}`, Hugging Face `{"error": "..."}`,
    Stability `{"errors": [...]}` / `{"message"}`, Replicate `{"detail"}`, KLING `{"message"}`."""
    return redact(_said(response), secrets)[:300]


def _said(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return str(response.text).strip()
    if not isinstance(body, dict):
        return str(body)
    error = body.get("error")
    if isinstance(error, dict):
        found = error.get("message") or error.get("status") or ""
    elif isinstance(error, str):
        found = error
    elif isinstance(body.get("errors"), list) and body["errors"]:
        found = "; ".join(str(item) for item in body["errors"])
    else:
        found = body.get("detail") or body.get("message") or body.get("name") or ""
    return str(found)


class ProviderHTTP:
    """One provider's HTTP client: base URL, auth headers, token bucket, bounded retries."""

    def __init__(
        self,
        provider: str,
        cfg: CloudBackendConfig,
        *,
        headers: Callable[[], Mapping[str, str]] | None = None,
        retry_hint: Callable[[httpx.Response], float | None] | None = None,
        refusal: Callable[[Any], AppError | None] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        fetch: FetchPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.cfg = cfg
        self.fetch = fetch or FetchPolicy()  # downloads: never a private target unless allow_hosts lists it
        self._headers = headers or (lambda: {})
        self._retry_hint = retry_hint
        self._refusal = refusal
        self._sleep = sleep
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.limiter = AsyncTokenBucket(cfg.rate_limit_per_minute / 60.0, clock=clock, sleep=sleep)
        self.attempts = 0  # HTTP requests sent, retries included
        self.retries = 0

    def client(self) -> httpx.AsyncClient:
        # Created on first use, so it binds to the event loop that serves requests.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.cfg.base_url.rstrip("/"),
                timeout=httpx.Timeout(self.cfg.timeout_s),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def backoff_s(self, retry: int, hinted_s: float | None) -> float:
        """Delay before retry `retry` (0-based): exponential, at least the provider's hint, capped."""
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2**retry))
        if hinted_s is not None:
            delay = max(delay, hinted_s)
        return min(delay, self.cfg.max_retry_wait_s)

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202),
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, retrying as the module doc says; returns a response whose status is in `ok`."""

        async def attempt() -> httpx.Response:
            sent = {**self._headers(), **(headers or {})}  # fresh per try (a JWT may expire)
            return await self._attempt(method, url, ok, sent, kwargs)

        return await self.with_retries(attempt, f"{method} {url}")

    async def with_retries(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """`await attempt()`, again after a backoff while it raises `Retryable`, at most
        `max_retries` times; then the last error. Also for clients that are not httpx (Hugging
        Face's InferenceClient): they raise `Retryable` through `raise_for_status`."""
        retry = 0
        while True:
            try:
                return await attempt()
            except Retryable as failed:
                if retry >= self.cfg.max_retries:
                    raise failed.error from None
                delay = self.backoff_s(retry, failed.retry_after_s)
                log.info("%s %s retry %d in %.2fs: %s", self.provider, what, retry + 1, delay, failed.error.message)
                self.retries += 1
                retry += 1
                await self._sleep(delay)

    async def _attempt(
        self, method: str, url: str, ok: tuple[int, ...], headers: dict[str, str], kwargs: dict[str, Any]
    ) -> httpx.Response:
        await self.limiter.acquire()
        self.attempts += 1
        try:
            response = await self.client().request(method, url, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise Retryable(
                UpstreamError(f"{self.provider} is unreachable ({type(exc).__name__}).", error_code="UPSTREAM_ERROR")
            ) from exc
        except httpx.TimeoutException as exc:
            error = UpstreamError(
                f"{self.provider} did not answer within {self.cfg.timeout_s:g}s.", error_code="UPSTREAM_TIMEOUT"
            )
            if method.upper() == "GET":
                raise Retryable(error) from exc
            raise error from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"{self.provider} connection failed ({type(exc).__name__}).", error_code="UPSTREAM_ERROR"
            ) from exc
        if response.status_code in ok:
            return response
        self.raise_for_status(response)
        raise AssertionError("unreachable")  # pragma: no cover - raise_for_status always raises here

    def raise_for_status(self, response: Any) -> None:
        """Raise what a failed answer means (an httpx-like response: status_code, headers, json()/text)."""
        status = response.status_code
        special = self._refusal(response) if self._refusal is not None else None
        if special is not None:
            raise special
        said = self.said(response)
        detail = f" (HTTP {status}{': ' + said if said else ''})"
        if status in (401, 403):
            raise BackendAuthFailed(
                f"{self.provider} rejected the API key{detail}; check {spelled(self.cfg.api_key_env)}.",
            )
        if status in RETRYABLE_STATUS:
            hint = parse_retry_after(response.headers.get("Retry-After"))
            if self._retry_hint is not None:
                hint = max(filter(None, [hint, self._retry_hint(response)]), default=None)
            code = "RATE_LIMITED" if status == 429 else "UPSTREAM_ERROR"
            raise Retryable(UpstreamError(f"{self.provider} is busy{detail}.", error_code=code), hint)
        if 400 <= status < 500:
            raise UpstreamError(f"{self.provider} refused the request{detail}.", error_code="UPSTREAM_REJECTED")
        raise UpstreamError(f"{self.provider} failed{detail}.", error_code="UPSTREAM_ERROR")

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """`request`, then its body as JSON (UPSTREAM_BAD_RESPONSE when it is not JSON)."""
        response = await self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise bad_response(self.provider, "a body that is not JSON") from exc

    def secrets(self) -> list[str]:
        """The configured key values (read at each use, as the keys are)."""
        names = [self.cfg.api_key_env, self.cfg.secret_key_env]
        return [found[1] for name in names if name and (found := env_choice(name)) is not None]

    def redact(self, text: str) -> str:
        """Provider text fit for a result or a log line (see serve_app.redact)."""
        return redact(text, self.secrets())

    def said(self, response: Any) -> str:
        """The provider's words in an error answer, redacted, first 300 characters."""
        return error_message(response, self.secrets())

    async def download(self, url: str) -> bytes:
        """The bytes at a URL the provider handed back (an output image), fetched as a user's URL
        is (see the module doc), at most `max_download_bytes`, retried as a GET is; no auth headers."""
        policy = self.fetch.model_copy(
            update={"max_bytes": self.cfg.max_download_bytes, "timeout_s": self.cfg.timeout_s}
        )

        async def attempt() -> bytes:
            await self.limiter.acquire()
            self.attempts += 1
            try:
                return await fetch_bytes(url, policy)
            except UnresolvableHost as exc:
                raise Retryable(self._download_failed(exc)) from exc
            except UnsafeURL as exc:
                raise UpstreamError(
                    f"{self.provider} answered an image URL that is not fetched here: {self.redact(exc.message)}",
                    error_code="UPSTREAM_BAD_RESPONSE",
                ) from exc
            except PayloadTooLarge as exc:
                raise UpstreamError(
                    f"{self.provider}'s image is larger than the limit of {policy.max_bytes} bytes.",
                    error_code="UPSTREAM_BAD_RESPONSE",
                ) from exc
            except ImageFetchFailed as exc:
                if exc.upstream_status is None or exc.upstream_status in RETRYABLE_STATUS:
                    raise Retryable(self._download_failed(exc)) from exc
                raise self._download_failed(exc) from exc

        return await self.with_retries(attempt, "image download")

    def _download_failed(self, exc: AppError) -> UpstreamError:
        return UpstreamError(f"Downloading {self.provider}'s image failed: {self.redact(exc.message)}")


def bad_response(provider: str, what: str) -> UpstreamError:
    return UpstreamError(f"{provider} answered with {what}.", error_code="UPSTREAM_BAD_RESPONSE")


def b64_image(answer: Any, provider: str) -> bytes:
    """The image of an OpenAI-shaped answer, `{"data": [{"b64_json": ...}]}` (OpenAI, and the
    Together and Nscale providers of Hugging Face)."""
    try:
        return base64.b64decode(answer["data"][0]["b64_json"], validate=True)
    except (KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise bad_response(provider, "a body without data[0].b64_json") from exc


class Retryable(Exception):
    """A failed attempt that may succeed if repeated; carries the error to raise when out of tries."""

    def __init__(self, error: AppError, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s
