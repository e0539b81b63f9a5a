"""ShoppingService and the ShoppingSearch deployment class, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from serve_app.errors import ConfigurationError, UpstreamError
from serve_app.settings import get_settings
from serve_app.shopping.catalog import CatalogProvider
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.naver import NaverShoppingProvider
from serve_app.shopping.service import ShoppingService
from serve_app.stages import DeskItem, ItemSearchResult, Offer
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.naver_stub import NaverStub

MOUSE = DeskItem(name="마우스", english="mouse", query="무선 마우스")
KEYBOARD = DeskItem(name="키보드", english="keyboard", query="기계식 키보드")
LAMP = DeskItem(name="데스크 램프", english="lamp", query="LED 스탠드 조명")
BASE = "http://host:8000/static"


@pytest.fixture
async def naver_service(stub: NaverStub, clock: FakeClock) -> AsyncIterator[ShoppingService]:
    cfg = ShoppingConfig(naver_base_url=stub.base_url, rate_limit_per_s=1000, max_retries=1, cache_ttl_s=60)
    provider = NaverShoppingProvider(
        cfg, client_id=stub.client_id, client_secret=stub.client_secret, clock=clock, sleep=clock.sleep
    )
    service = ShoppingService(cfg, provider, clock=clock)
    yield service
    await service.aclose()


class ScriptedProvider:
    """A provider whose answer per query is an offer list or an exception."""

    name = "scripted"

    def __init__(self, answers: dict[str, list[Offer] | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def search(self, item: DeskItem, limit: int) -> list[Offer]:
        self.calls.append(item.query)
        await asyncio.sleep(0)
        answer = self.answers[item.query]
        if isinstance(answer, Exception):
            raise answer
        return answer[:limit]


def offer(title: str, price: int) -> Offer:
    return Offer(title=title, price=f"{price}원", mall="몰", category3="c", category4="d", link="https://x")


async def test_results_per_item_from_naver(naver_service: ShoppingService) -> None:
    results = await naver_service.search([MOUSE, KEYBOARD])
    assert list(results) == ["마우스", "키보드"]
    for result in results.values():
        assert isinstance(result, ItemSearchResult)
        assert len(result.offers) == 3 and result.error_code is None


async def test_one_failing_item_does_not_fail_the_others(naver_service: ShoppingService, stub: NaverStub) -> None:
    stub.server_error(query=KEYBOARD.query)
    stub.rate_limit(query=LAMP.query)
    results = await naver_service.search([MOUSE, KEYBOARD, LAMP])
    assert len(results["마우스"].offers) == 3 and results["마우스"].error_code is None
    assert results["키보드"].offers == [] and results["키보드"].error_code == "UPSTREAM_ERROR"
    assert results["키보드"].message and "500" in results["키보드"].message
    assert results["데스크 램프"].error_code == "RATE_LIMITED"


async def test_cache_hit_avoids_a_second_request(naver_service: ShoppingService, stub: NaverStub) -> None:
    first = await naver_service.search([MOUSE])
    second = await naver_service.search([MOUSE])
    assert first == second
    assert stub.request_count == 1
    assert naver_service.cache.stats.hits == 1


async def test_concurrent_identical_lookups_share_one_request(naver_service: ShoppingService, stub: NaverStub) -> None:
    results = await asyncio.gather(*(naver_service.search([MOUSE, KEYBOARD]) for _ in range(4)))
    assert all(r == results[0] for r in results)
    assert stub.count_for(MOUSE.query) == 1 and stub.count_for(KEYBOARD.query) == 1


async def test_cache_entries_expire(naver_service: ShoppingService, stub: NaverStub, clock: FakeClock) -> None:
    await naver_service.search([MOUSE])
    clock.advance(61)
    await naver_service.search([MOUSE])
    assert stub.request_count == 2


async def test_failures_are_not_cached(naver_service: ShoppingService, stub: NaverStub) -> None:
    stub.server_error(times=2)  # both tries of the first lookup
    assert (await naver_service.search([MOUSE]))["마우스"].error_code == "UPSTREAM_ERROR"
    assert len((await naver_service.search([MOUSE]))["마우스"].offers) == 3


async def test_error_codes_of_every_kind_are_reported() -> None:
    provider = ScriptedProvider(
        {
            "ok": [offer("b", 2000), offer("a", 1000)],
            "keys": ConfigurationError("Naver Shopping rejected the API credentials."),
            "busy": UpstreamError("slow down", error_code="RATE_LIMITED"),
            "bug": ZeroDivisionError("boom"),
        }
    )
    service = ShoppingService(ShoppingConfig(offers_per_item=1), provider)
    items = [DeskItem(name=q, english=q, query=q) for q in ("ok", "keys", "busy", "bug")]
    results = await service.search(items)
    assert [o.title for o in results["ok"].offers] == ["b"]  # limit = offers_per_item
    assert results["keys"].error_code == "CONFIGURATION_ERROR"
    assert results["busy"].error_code == "RATE_LIMITED" and results["busy"].message == "slow down"
    assert results["bug"].error_code == "SHOPPING_FAILED" and "boom" not in (results["bug"].message or "")


async def test_duplicate_names_are_looked_up_once() -> None:
    provider = ScriptedProvider({"무선 마우스": [offer("m", 1000)], "다른 쿼리": [offer("x", 1)]})
    service = ShoppingService(ShoppingConfig(), provider)
    duplicate = DeskItem(name="마우스", english="mouse", query="다른 쿼리")
    results = await service.search([MOUSE, duplicate])
    assert list(results) == ["마우스"] and provider.calls == ["무선 마우스"]
    assert await service.search([]) == {}


async def test_fallback_to_catalog_when_primary_fails() -> None:
    provider = ScriptedProvider({MOUSE.query: UpstreamError("down", error_code="RATE_LIMITED")})
    service = ShoppingService(ShoppingConfig(), provider, fallback=CatalogProvider(BASE))
    result = (await service.search([MOUSE]))["마우스"]
    assert len(result.offers) == 3 and result.error_code is None
    assert result.offers[0].image.startswith(BASE)


async def test_from_config_defaults_to_the_catalog_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.settings import Settings

    service = ShoppingService.from_config(ShoppingConfig(), Settings(), BASE)
    assert service.provider.name == "catalog" and service.fallback is None
    results = await service.search([MOUSE, KEYBOARD, LAMP])
    assert all(len(r.offers) == 3 for r in results.values())
    assert service.info()["provider"] == "catalog"


# --- the deployment class, called directly (no Ray) ----------------------------------------------


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("NAVER_CLIENT_ID", raising=False)
    monkeypatch.delenv("NAVER_CLIENT_SECRET", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def deployment_class() -> Any:
    import ray
    from ray.serve import Deployment

    from deployments.shopping_search import ShoppingSearch

    assert isinstance(ShoppingSearch, Deployment)
    assert not ray.is_initialized()  # importing it did not start Ray
    return ShoppingSearch.func_or_class


async def test_deployment_uses_catalog_without_keys(clean_settings: pytest.MonkeyPatch) -> None:
    replica = deployment_class()(ShoppingConfig(offers_per_item=2), BASE)
    results = await replica.search([MOUSE, KEYBOARD])
    assert set(results) == {"마우스", "키보드"} and all(len(r.offers) == 2 for r in results.values())
    assert (await replica.info())["provider"] == "catalog"
    await replica.check_health()


async def test_deployment_uses_naver_with_keys(clean_settings: pytest.MonkeyPatch, stub: NaverStub) -> None:
    clean_settings.setenv("NAVER_CLIENT_ID", stub.client_id)
    clean_settings.setenv("NAVER_CLIENT_SECRET", stub.client_secret)
    replica = deployment_class()(ShoppingConfig(naver_base_url=stub.base_url), BASE)
    results = await replica.search([MOUSE])
    await replica.search([MOUSE])
    assert len(results["마우스"].offers) == 3 and stub.request_count == 1
    info = await replica.info()
    assert info["provider"] == "naver" and info["provider_stats"]["requests"] == 1
    await replica.service.aclose()


def test_deployment_with_naver_but_no_keys_fails_fast(clean_settings: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError):
        deployment_class()(ShoppingConfig(provider="naver"), BASE)
