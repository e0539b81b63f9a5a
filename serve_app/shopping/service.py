"""ShoppingService: per-item offer lookup for the desk flow, cached, concurrent and failure-isolated.

The `ShoppingSearch` Serve deployment is a thin wrapper around this class, so the logic is
unit-tested without Ray. One item's failure becomes that item's `error_code`/`message` and never
fails the others; an optional fallback provider (the offline catalog) can stand in when the
primary one fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from serve_app.errors import AppError
from serve_app.settings import Settings
from serve_app.shopping.base import SORT_ASC, Clock, ShoppingProvider, Sleep
from serve_app.shopping.cache import CacheKey, TTLCache
from serve_app.shopping.catalog import CatalogProvider
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.factory import make_provider
from serve_app.stages import DeskItem, ItemSearchResult, Offer

log = logging.getLogger(__name__)


class ShoppingService:
    """Looks up offers for desk items through one provider (+ optional fallback) and a TTL cache."""

    def __init__(
        self,
        cfg: ShoppingConfig,
        provider: ShoppingProvider,
        *,
        fallback: ShoppingProvider | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.provider = provider
        self.fallback = fallback
        self.cache: TTLCache[tuple[Offer, ...]] = TTLCache(cfg.cache_ttl_s, cfg.cache_max_entries, clock=clock)
        # Told of every failed provider lookup, (provider name, error code), a fallback's too (metrics).
        self.on_error: Callable[[str, str], None] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: ShoppingConfig,
        settings: Settings,
        image_base_url: str,
        *,
        fallback_to_catalog: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> ShoppingService:
        """Build the provider `cfg` selects (see `make_provider`); raises ConfigurationError."""
        provider = make_provider(cfg, settings, image_base_url, clock=clock, sleep=sleep)
        fallback = None
        if fallback_to_catalog and provider.name != "catalog":
            fallback = CatalogProvider(image_base_url)
        return cls(cfg, provider, fallback=fallback, clock=clock)

    @staticmethod
    def cache_key(provider: ShoppingProvider, item: DeskItem, limit: int) -> CacheKey:
        # The catalog matches on the item name as well as the query, so both are in the key.
        return CacheKey(provider.name, f"{item.name}\x1f{item.query}", SORT_ASC, limit)

    async def _lookup(self, provider: ShoppingProvider, item: DeskItem) -> list[Offer]:
        limit = self.cfg.offers_per_item

        async def load() -> tuple[Offer, ...]:
            return tuple(await provider.search(item, limit))

        return list(await self.cache.get_or_load(self.cache_key(provider, item, limit), load))

    async def search_item(self, item: DeskItem) -> ItemSearchResult:
        """Offers for one item, or the error that stopped them; never raises an AppError."""
        try:
            return ItemSearchResult(offers=await self._lookup(self.provider, item))
        except AppError as exc:
            error: AppError = exc
        except Exception:
            log.exception("shopping search for %r failed unexpectedly", item.name)
            error = AppError("Shopping search failed unexpectedly.", error_code="SHOPPING_FAILED")
        log.warning("shopping search for %r failed: %s %s", item.name, error.error_code, error.message)
        self._report(self.provider, error)
        if self.fallback is not None:
            try:
                return ItemSearchResult(offers=await self._lookup(self.fallback, item))
            except Exception as exc:
                log.exception("fallback shopping search for %r failed", item.name)
                self._report(self.fallback, exc)
        return ItemSearchResult(offers=[], error_code=error.error_code, message=error.message)

    def _report(self, provider: ShoppingProvider, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(provider.name, exc.error_code if isinstance(exc, AppError) else "SHOPPING_FAILED")

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        """Item name -> result, for every item concurrently (the first of equal names wins)."""
        unique: dict[str, DeskItem] = {}
        for item in items:
            unique.setdefault(item.name, item)
        results = await asyncio.gather(*(self.search_item(item) for item in unique.values()))
        return dict(zip(unique, results, strict=True))

    def info(self) -> dict[str, Any]:
        """Provider, limits and counters, for GET /info and debugging."""
        stats = getattr(self.provider, "stats", None)
        return {
            "provider": self.provider.name,
            "fallback": self.fallback.name if self.fallback else None,
            "offers_per_item": self.cfg.offers_per_item,
            "cache": self.cache.stats.model_dump(),
            "provider_stats": stats.model_dump() if hasattr(stats, "model_dump") else None,
        }

    async def aclose(self) -> None:
        """Release provider resources (HTTP connection pools)."""
        for provider in (self.provider, self.fallback):
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
