"""TTL/LRU cache with single-flight loading (fake clock, no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.shopping.cache import CacheKey, TTLCache
from testbed.stubs.fake_clock import FakeClock


def key(query: str = "무선 마우스", provider: str = "naver", sort: str = "asc", limit: int = 3) -> CacheKey:
    return CacheKey(provider, query, sort, limit)


def new_cache(ttl_s: float = 60, max_entries: int = 10) -> TTLCache[str]:
    """A cache on a fake clock (whose time stands still unless a test moves it)."""
    return TTLCache(ttl_s=ttl_s, max_entries=max_entries, clock=FakeClock())


class Loader:
    """A cache loader that counts its calls: each yields to the loop once (or waits for `release`),
    then answers `value` or raises `error`."""

    def __init__(self, value: str = "", release: asyncio.Event | None = None, error: Exception | None = None) -> None:
        self.value, self.release, self.error = value, release, error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await (self.release.wait() if self.release is not None else asyncio.sleep(0))
        if self.error is not None:
            raise self.error
        return self.value


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache: TTLCache[str] = TTLCache(ttl_s=10, max_entries=10, clock=clock)
    cache.put(key(), "v")
    clock.advance(9.9)
    assert cache.get(key()) == (True, "v")
    clock.advance(0.1)
    assert cache.get(key()) == (False, None)
    assert len(cache) == 0


def test_lru_bound_evicts_least_recently_used() -> None:
    cache = new_cache(max_entries=2)
    cache.put(key("a"), "A")
    cache.put(key("b"), "B")
    assert cache.get(key("a"))[0]  # a is now the most recently used
    cache.put(key("c"), "C")
    assert len(cache) == 2
    assert cache.get(key("b")) == (False, None)
    assert cache.get(key("a")) == (True, "A")
    assert cache.get(key("c")) == (True, "C")
    assert cache.stats.evictions == 1


def test_key_includes_provider_query_sort_and_limit() -> None:
    cache = new_cache()
    cache.put(key(), "naver")
    assert cache.get(key(provider="catalog")) == (False, None)
    assert cache.get(key(query="기계식 키보드")) == (False, None)
    assert cache.get(key(sort="dsc")) == (False, None)
    assert cache.get(key(limit=5)) == (False, None)
    assert cache.get(key()) == (True, "naver")


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (60, 0)])
def test_zero_ttl_or_size_disables_storage(ttl: float, size: int) -> None:
    cache = new_cache(ttl, size)
    cache.put(key(), "v")
    assert cache.get(key()) == (False, None)


async def test_get_or_load_caches_and_counts() -> None:
    cache = new_cache()
    load = Loader("offers")
    assert await cache.get_or_load(key(), load) == "offers"
    assert await cache.get_or_load(key(), load) == "offers"
    assert load.calls == 1
    assert cache.stats.hits == 1 and cache.stats.misses == 1 and cache.stats.size == 1


async def test_concurrent_identical_lookups_share_one_load() -> None:
    cache = new_cache()
    release = asyncio.Event()
    load = Loader("shared", release)
    waiters = [asyncio.create_task(cache.get_or_load(key(), load)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["shared"] * 5
    assert load.calls == 1
    assert cache.stats.shared == 4


async def test_failures_are_shared_but_not_cached() -> None:
    cache = new_cache()
    load = Loader(error=RuntimeError("upstream down"))
    results = await asyncio.gather(*(cache.get_or_load(key(), load) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert load.calls == 1
    with pytest.raises(RuntimeError):
        await cache.get_or_load(key(), load)
    assert load.calls == 2
    assert len(cache) == 0


async def test_cancelling_one_waiter_does_not_cancel_the_shared_load() -> None:
    cache = new_cache()
    release = asyncio.Event()
    load = Loader("done", release)
    first = asyncio.create_task(cache.get_or_load(key(), load))
    second = asyncio.create_task(cache.get_or_load(key(), load))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"
    assert first.cancelled()
    assert cache.get(key()) == (True, "done")
