"""Naver Shopping search API client (`GET /v1/search/shop.json`) mapped to the source spec's offer schema.

Wire format: https://developers.naver.com/docs/serviceapi/search/shopping/shopping.md
Requests carry `X-Naver-Client-Id` / `X-Naver-Client-Secret`; `sort=asc` orders by lowest price.
Every request waits on a per-replica token bucket; 429, 5xx and timeouts are retried a bounded
number of times with exponential backoff (honouring Retry-After); 401/403 mean bad keys and
are not retried.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.errors import AppError, ConfigurationError, UpstreamError
from serve_app.retry import parse_retry_after
from serve_app.shopping.base import DEFAULT_MALL, SORT_ASC, Clock, Sleep, format_price, parse_price
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.ratelimit import AsyncTokenBucket
from serve_app.stages import DeskItem, Offer

log = logging.getLogger(__name__)

SEARCH_PATH = "/v1/search/shop.json"
MAX_DISPLAY = 100  # Naver's cap on `display`
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def clean_title(raw: str) -> str:
    """Plain text of a Naver title: it marks query hits with `<b>` and escapes entities, so tags
    are stripped and entities unescaped until neither changes anything (an escaped tag such as
    `&lt;script&gt;` must not come back as markup), and stray angle brackets go too."""
    text, previous = raw, None
    while text != previous:
        previous = text
        text = _TAG_RE.sub("", html.unescape(text))
    return _SPACE_RE.sub(" ", text.replace("<", " ").replace(">", " ")).strip()


def web_url(value: str) -> str:
    """`value` when it is an absolute http(s) URL, else "" (no javascript:, data: or relative links)."""
    value = value.strip()
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else ""


class NaverItem(BaseModel):
    """One entry of `items` in Naver's answer (fields we use; all strings on the wire)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    title: str = ""
    link: str = ""
    image: str = ""
    lprice: str | None = None
    hprice: str | None = None
    mall_name: str | None = Field(default=None, alias="mallName")
    product_id: str | None = Field(default=None, alias="productId")
    category3: str | None = None
    category4: str | None = None


class NaverSearchResponse(BaseModel):
    """Top level of Naver's answer; `items` stays raw so one odd entry does not sink the rest."""

    model_config = ConfigDict(extra="ignore")

    total: int = 0
    start: int = 1
    display: int = 0
    items: list[Any]


def item_to_offer(raw: Any) -> tuple[int, Offer] | None:
    """(price, offer) for one Naver item; None when it is not an object or has no usable price."""
    if not isinstance(raw, dict):
        return None
    try:
        item = NaverItem.model_validate(raw)
    except ValidationError:
        return None
    price = parse_price(item.lprice)
    link = web_url(item.link)
    if price is None or not link:
        return None
    offer = Offer(
        title=clean_title(item.title),
        price=format_price(price),
        mall=(item.mall_name or "").strip() or DEFAULT_MALL,
        category3=(item.category3 or "").strip(),
        category4=(item.category4 or "").strip(),
        link=link,
        image=web_url(item.image),
    )
    return price, offer


def map_items(items: list[Any], limit: int) -> list[Offer]:
    """The `limit` cheapest usable offers, by numeric price (stable for equal prices)."""
    priced = [mapped for mapped in (item_to_offer(raw) for raw in items) if mapped is not None]
    priced.sort(key=lambda pair: pair[0])
    return [offer for _, offer in priced[:limit]]


class NaverStats(BaseModel):
    """Counters for /info and tests."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failures: int = 0  # searches that ended in an error


class _Retryable(Exception):
    """A failed attempt that may succeed if repeated; carries the error to raise when out of tries."""

    def __init__(self, error: AppError, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s


class NaverShoppingProvider:
    """`ShoppingProvider` backed by the Naver Shopping search API."""

    name = "naver"

    def __init__(
        self,
        cfg: ShoppingConfig,
        *,
        client_id: str,
        client_secret: str,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not client_id or not client_secret:
            raise ConfigurationError("Naver Shopping needs NAVER_CLIENT_ID and NAVER_CLIENT_SECRET.")
        self.cfg = cfg
        self.base_url = cfg.naver_base_url.rstrip("/")
        self._headers = {"X-Naver-Client-Id": client_id, "X-Naver-Client-Secret": client_secret}
        self._sleep = sleep
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.limiter = AsyncTokenBucket(cfg.rate_limit_per_s, clock=clock, sleep=sleep)
        self.stats = NaverStats()

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so it binds to the event loop that serves requests.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(self.cfg.timeout_s),
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def backoff_s(self, retry: int, retry_after_s: float | None = None) -> float:
        """Delay before retry number `retry` (0-based): exponential, at least what Retry-After asked."""
        delay = min(self._backoff_max_s, self._backoff_base_s * (2**retry))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._max_retry_after_s))
        return delay

    async def search(self, item: DeskItem, limit: int) -> list[Offer]:
        """Up to `limit` offers for `item.query`, lowest price first."""
        display = min(MAX_DISPLAY, max(10, limit * 4))  # extra rows: some have no usable price
        params = {"query": item.query, "display": display, "start": 1, "sort": SORT_ASC}
        try:
            payload = await self._get_with_retries(params)
        except AppError:
            self.stats.failures += 1
            raise
        return map_items(payload.items, limit)

    async def _get_with_retries(self, params: dict[str, Any]) -> NaverSearchResponse:
        retry = 0
        while True:
            try:
                return await self._attempt(params)
            except _Retryable as failed:
                if retry >= self.cfg.max_retries:
                    raise failed.error from None
                delay = self.backoff_s(retry, failed.retry_after_s)
                log.info("Naver search retry %d in %.2fs: %s", retry + 1, delay, failed.error.message)
                self.stats.retries += 1
                retry += 1
                await self._sleep(delay)

    async def _attempt(self, params: dict[str, Any]) -> NaverSearchResponse:
        await self.limiter.acquire()
        self.stats.requests += 1
        try:
            response = await self._http().get(SEARCH_PATH, params=params)
        except httpx.TimeoutException as exc:
            raise _Retryable(
                UpstreamError(
                    f"Naver Shopping did not answer within {self.cfg.timeout_s:g}s.", error_code="UPSTREAM_TIMEOUT"
                )
            ) from exc
        except httpx.TransportError as exc:
            raise _Retryable(
                UpstreamError(f"Naver Shopping is unreachable ({type(exc).__name__}).", error_code="UPSTREAM_ERROR")
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise ConfigurationError(
                f"Naver Shopping rejected the API credentials (HTTP {status}{_naver_error(response)}). "
                "Check NAVER_CLIENT_ID / NAVER_CLIENT_SECRET and that the Search API is enabled for the app."
            )
        if status == 429:
            raise _Retryable(
                UpstreamError(
                    f"Naver Shopping rate limit exceeded{_naver_error(response)}.", error_code="RATE_LIMITED"
                ),
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise _Retryable(
                UpstreamError(f"Naver Shopping failed with HTTP {status}{_naver_error(response)}."),
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if status != 200:
            raise UpstreamError(
                f"Naver Shopping refused the search with HTTP {status}{_naver_error(response)}.",
                error_code="UPSTREAM_REJECTED",
            )
        try:
            return NaverSearchResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
            raise UpstreamError(
                "Naver Shopping answered with a malformed body.", error_code="UPSTREAM_BAD_RESPONSE"
            ) from exc


def _naver_error(response: httpx.Response) -> str:
    """`, CODE: message` from Naver's error JSON, or '' when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code, message = body.get("errorCode"), body.get("errorMessage")
    if not code and not message:
        return ""
    return f", {code or '?'}: {str(message or '')[:200]}"
