"""NaverShoppingProvider against the local Naver stub: mapping, auth, retries, timeouts, bad bodies."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.errors import ConfigurationError, UpstreamError
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.naver import NaverShoppingProvider
from serve_app.stages import DeskItem
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.naver_stub import NaverStub

MOUSE = DeskItem(name="마우스", english="mouse", query="무선 마우스")
KEYBOARD = DeskItem(name="키보드", english="keyboard", query="기계식 키보드")
PRICE = re.compile(r"^[1-9][0-9]*원$")


@pytest.fixture
async def make(stub: NaverStub, clock: FakeClock) -> AsyncIterator[Any]:
    """Factory of providers pointed at the stub (fake sleep: backoffs cost no wall time)."""
    made: list[NaverShoppingProvider] = []

    def factory(secret: str | None = None, **overrides: Any) -> NaverShoppingProvider:
        cfg = ShoppingConfig(naver_base_url=stub.base_url, rate_limit_per_s=1000, timeout_s=2.0, max_retries=3)
        provider = NaverShoppingProvider(
            cfg.model_copy(update=overrides),
            client_id=stub.client_id,
            client_secret=secret or stub.client_secret,
            clock=clock,
            sleep=clock.sleep,
        )
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


async def test_happy_path_maps_and_sorts(stub: NaverStub, make: Any) -> None:
    offers = await make().search(MOUSE, 3)
    assert len(offers) == 3
    prices = [int(o.price.removesuffix("원")) for o in offers]
    assert prices == sorted(prices)
    for offer in offers:
        assert PRICE.match(offer.price)
        assert "<b>" not in offer.title and "&amp;" not in offer.title and "&quot;" not in offer.title
        assert "무선 마우스" in offer.title and '& 사은품 "한정"' in offer.title
        assert offer.mall
        assert offer.category3 == "마우스" and offer.category4 == "무선마우스"
        assert offer.link.startswith("https://") and offer.image.startswith("https://")
    # the cheapest priced items of the whole answer, i.e. sort=asc was asked for and honoured
    (request,) = stub.requests
    assert request.params["sort"] == "asc" and request.params["start"] == "1"
    assert request.params["query"] == "무선 마우스"
    assert int(request.params["display"]) >= 3
    assert (request.client_id, request.client_secret) == (stub.client_id, stub.client_secret)


SHOP = "https://shop.example/p"


async def test_custom_items_skip_unpriced_and_map_empty_mall(stub: NaverStub, make: Any) -> None:
    stub.set_products(
        "무선 마우스",
        [
            {
                "title": "<b>무선</b> 마우스 A",
                "lprice": "",
                "mallName": "몰",
                "link": "https://shop.example/p",
                "image": "i",
            },
            {
                "title": "<b>무선</b> 마우스 B",
                "lprice": "15000",
                "mallName": "",
                "link": "https://shop.example/p",
                "image": "i",
            },
            {
                "title": "무선 마우스 C &amp; 패드",
                "lprice": "9900",
                "mallName": "오피스몰",
                "link": "https://shop.example/p",
                "image": "i",
            },
            {
                "title": "무선 마우스 D",
                "lprice": "120000",
                "mallName": "몰",
                "link": "https://shop.example/p",
                "image": "i",
            },
        ],
    )
    offers = await make().search(MOUSE, 3)
    assert [(o.title, o.price, o.mall) for o in offers] == [
        ("무선 마우스 C & 패드", "9900원", "오피스몰"),
        ("무선 마우스 B", "15000원", "네이버"),
        ("무선 마우스 D", "120000원", "몰"),
    ]


async def test_no_results_is_an_empty_list(stub: NaverStub, make: Any) -> None:
    stub.set_products("무선 마우스", [])
    assert await make().search(MOUSE, 3) == []


async def test_bad_keys_raise_configuration_error_without_retry(stub: NaverStub, make: Any) -> None:
    provider = make(secret="wrong-secret")
    with pytest.raises(ConfigurationError) as info:
        await provider.search(MOUSE, 3)
    assert "NAVER_CLIENT_ID" in info.value.message and "401" in info.value.message
    assert "024" in info.value.message
    assert "wrong-secret" not in info.value.message
    assert stub.request_count == 1
    assert provider.stats.retries == 0 and provider.stats.failures == 1


async def test_forbidden_is_a_configuration_error(stub: NaverStub, make: Any) -> None:
    stub.set_mode("forbidden")
    with pytest.raises(ConfigurationError, match="403"):
        await make().search(MOUSE, 3)
    assert stub.request_count == 1


async def test_rate_limited_twice_then_ok_recovers(stub: NaverStub, make: Any, clock: FakeClock) -> None:
    stub.rate_limit(times=2)
    provider = make()
    offers = await provider.search(MOUSE, 3)
    assert len(offers) == 3
    assert stub.request_count == 3
    assert provider.stats.retries == 2 and provider.stats.requests == 3 and provider.stats.failures == 0
    assert clock.sleeps == [0.5, 1.0]  # exponential backoff


async def test_retry_after_is_honoured(stub: NaverStub, make: Any, clock: FakeClock) -> None:
    stub.rate_limit(times=1, retry_after=3)
    assert len(await make().search(MOUSE, 3)) == 3
    assert clock.sleeps == [3.0]


async def test_rate_limited_forever_gives_rate_limited(stub: NaverStub, make: Any, clock: FakeClock) -> None:
    stub.rate_limit()
    provider = make(max_retries=2)
    with pytest.raises(UpstreamError) as info:
        await provider.search(MOUSE, 3)
    assert info.value.error_code == "RATE_LIMITED"
    assert stub.request_count == 3
    assert clock.sleeps == [0.5, 1.0]


async def test_server_error_is_retried_then_recovers(stub: NaverStub, make: Any) -> None:
    stub.server_error(times=1)
    provider = make()
    assert len(await provider.search(MOUSE, 3)) == 3
    assert provider.stats.retries == 1 and stub.request_count == 2


async def test_server_error_forever_gives_upstream_error(stub: NaverStub, make: Any) -> None:
    stub.server_error()
    with pytest.raises(UpstreamError) as info:
        await make(max_retries=1).search(MOUSE, 3)
    assert info.value.error_code == "UPSTREAM_ERROR" and "500" in info.value.message
    assert stub.request_count == 2


async def test_slow_upstream_times_out(stub: NaverStub, make: Any) -> None:
    stub.slow(delay_s=10)
    provider = make(timeout_s=0.2, max_retries=1)
    with pytest.raises(UpstreamError) as info:
        await provider.search(MOUSE, 3)
    assert info.value.error_code == "UPSTREAM_TIMEOUT"
    assert provider.stats.requests == 2


async def test_one_slow_answer_is_retried(stub: NaverStub, make: Any) -> None:
    stub.slow(delay_s=10, times=1)
    provider = make(timeout_s=0.2)
    assert len(await provider.search(MOUSE, 3)) == 3
    assert provider.stats.retries == 1


@pytest.mark.parametrize("mode", ["malformed", "bad_shape"])
async def test_malformed_answer_is_bad_response_and_not_retried(stub: NaverStub, make: Any, mode: str) -> None:
    stub.set_mode(mode)
    with pytest.raises(UpstreamError) as info:
        await make().search(MOUSE, 3)
    assert info.value.error_code == "UPSTREAM_BAD_RESPONSE"
    assert stub.request_count == 1


async def test_unreachable_upstream_is_upstream_error(clock: FakeClock) -> None:
    # A bound socket that never listens: connections are refused and no one else can take the port.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        provider = NaverShoppingProvider(
            ShoppingConfig(naver_base_url=f"http://127.0.0.1:{port}", max_retries=1),
            client_id="i",
            client_secret="s",
            clock=clock,
            sleep=clock.sleep,
        )
        with pytest.raises(UpstreamError) as info:
            await provider.search(MOUSE, 3)
        await provider.aclose()
    assert info.value.error_code == "UPSTREAM_ERROR" and "unreachable" in info.value.message
    assert provider.stats.requests == 2


async def test_per_query_trigger_only_hits_that_query(stub: NaverStub, make: Any) -> None:
    stub.server_error(query=KEYBOARD.query)
    provider = make(max_retries=0)
    assert len(await provider.search(MOUSE, 3)) == 3
    with pytest.raises(UpstreamError):
        await provider.search(KEYBOARD, 3)
    assert stub.count_for(MOUSE.query) == 1 and stub.count_for(KEYBOARD.query) == 1


async def test_modes_can_be_switched_over_http(stub: NaverStub, make: Any) -> None:
    async with httpx.AsyncClient(base_url=stub.base_url) as client:
        answer = await client.post("/__control", json={"mode": "rate_limit", "times": 2})
        assert answer.status_code == 200 and answer.json()["rules"][0]["mode"] == "rate_limit"
        provider = make()
        assert len(await provider.search(MOUSE, 3)) == 3
        assert provider.stats.retries == 2
        stats = (await client.get("/__stats")).json()
        assert stats["requests"] == 3 and stats["by_query"] == {"무선 마우스": 3}
        assert (await client.post("/__control", json={"action": "reset"})).json()["requests"] == 0


async def test_all_requests_pass_the_rate_limiter(stub: NaverStub, clock: FakeClock) -> None:
    cfg = ShoppingConfig(naver_base_url=stub.base_url, rate_limit_per_s=2)
    provider = NaverShoppingProvider(
        cfg, client_id=stub.client_id, client_secret=stub.client_secret, clock=clock, sleep=clock.sleep
    )
    items = [DeskItem(name=f"n{i}", english="x", query=f"상품 {i}") for i in range(5)]
    await asyncio.gather(*(provider.search(item, 3) for item in items))  # concurrent, one shared bucket
    await provider.aclose()
    assert provider.limiter.acquired == 5 == stub.request_count
    assert clock.sleeps == pytest.approx([0.5] * 4)  # 2 per second: spaced half a second apart
