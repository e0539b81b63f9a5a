"""ShoppingSearch Serve deployment: detected desk items -> up to N offers each, cheapest first.

Replicas, CPU shares and autoscaling live in serve_config.yaml, not in the decorator. Naver keys
come from the replica's environment (NAVER_CLIENT_ID / NAVER_CLIENT_SECRET); without them the
offline catalog answers. Importing this module does not start Ray.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.metrics import ShoppingMetrics
from serve_app.settings import get_settings
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.service import ShoppingService
from serve_app.stages import DeskItem, ItemSearchResult


@serve.deployment
class ShoppingSearch:
    """Wraps `ShoppingService`; one provider, rate limiter and cache per replica."""

    def __init__(self, config: ShoppingConfig, image_base_url: str) -> None:
        self.service = ShoppingService.from_config(
            config, get_settings(), image_base_url, fallback_to_catalog=config.fallback_to_catalog
        )
        self.metrics = ShoppingMetrics()
        self.service.on_error = self.metrics.provider_error

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        """Item name -> offers (or that item's error); items are looked up concurrently."""
        return await self.service.search(items)

    async def info(self) -> dict[str, Any]:
        """Provider name, cache and request counters."""
        return self.service.info()

    async def check_health(self) -> None:
        """Serve's periodic probe. Construction already validated config and keys; probing Naver
        here would spend its daily quota, so there is nothing more to check."""
