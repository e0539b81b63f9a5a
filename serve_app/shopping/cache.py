"""TTL + LRU cache of search results, with single-flight loading.

Shopping answers change slowly and Naver's quota is per day, so a replica remembers each
(provider, query, sort, limit) answer for `ttl_s`. Concurrent identical lookups share one
in-flight request instead of each spending a call. Failures are never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, NamedTuple, TypeVar

from pydantic import BaseModel

from serve_app.shopping.base import Clock

V = TypeVar("V")


class CacheKey(NamedTuple):
    """What a cached answer depends on."""

    provider: str
    query: str
    sort: str
    limit: int


class CacheStats(BaseModel):
    """Counters for /info and tests."""

    hits: int = 0
    misses: int = 0
    shared: int = 0  # lookups that joined another caller's in-flight load
    loads: int = 0
    evictions: int = 0
    size: int = 0


class TTLCache(Generic[V]):
    """At most `max_entries` values, each valid for `ttl_s` after it was stored (0 disables either)."""

    def __init__(self, ttl_s: float, max_entries: int, *, clock: Clock = time.monotonic) -> None:
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._data: OrderedDict[CacheKey, tuple[float, V]] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Task[V]] = {}
        self._stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_entries > 0

    @property
    def stats(self) -> CacheStats:
        return self._stats.model_copy(update={"size": len(self._data)})

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: CacheKey) -> tuple[bool, V | None]:
        """(True, value) when a fresh entry exists (and mark it recently used), else (False, None)."""
        entry = self._data.get(key)
        if entry is None:
            return False, None
        stored_at, value = entry
        if self._clock() - stored_at >= self.ttl_s:
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, value

    def put(self, key: CacheKey, value: V) -> None:
        """Store `value`, evicting the least recently used entries beyond `max_entries`."""
        if not self.enabled:
            return
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self._stats.evictions += 1

    def clear(self) -> None:
        self._data.clear()

    async def get_or_load(self, key: CacheKey, loader: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of `loader()` shared by every concurrent caller of `key`.

        The load runs as its own task, so one caller being cancelled does not cancel the others.
        """
        found, value = self.get(key)
        if found:
            self._stats.hits += 1
            return value  # type: ignore[return-value]
        task = self._inflight.get(key)
        if task is None:
            self._stats.misses += 1
            self._stats.loads += 1
            task = asyncio.ensure_future(self._load(key, loader))
            self._inflight[key] = task
            task.add_done_callback(partial(self._finished, key))
        else:
            self._stats.shared += 1
        return await asyncio.shield(task)

    async def _load(self, key: CacheKey, loader: Callable[[], Awaitable[V]]) -> V:
        value = await loader()
        self.put(key, value)
        return value

    def _finished(self, key: CacheKey, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: no "exception never retrieved" noise when no one waits
