"""Builds the shopping provider the config names; it sits above the providers, which never import it."""

from __future__ import annotations

import asyncio
import time

from serve_app.errors import ConfigurationError
from serve_app.settings import Settings
from serve_app.shopping.base import Clock, ShoppingProvider, Sleep, has_naver_credentials, provider_name
from serve_app.shopping.catalog import CatalogProvider
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.naver import NaverShoppingProvider


def make_provider(
    cfg: ShoppingConfig,
    settings: Settings,
    image_base_url: str,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> ShoppingProvider:
    """The provider `cfg.provider` names; `auto` is Naver when both keys are set, else the catalog.

    `image_base_url` is where the ingress serves static files (e.g. `http://host:8000/static`);
    only the catalog uses it, for its product images.
    """
    if provider_name(cfg, settings) == "naver":
        if not has_naver_credentials(settings):
            raise ConfigurationError(
                "Shopping provider 'naver' needs the NAVER_CLIENT_ID and NAVER_CLIENT_SECRET environment "
                "variables (or use provider 'catalog' / 'auto' for the offline catalog)."
            )
        return NaverShoppingProvider(
            cfg,
            client_id=(settings.naver_client_id or "").strip(),
            client_secret=(settings.naver_client_secret or "").strip(),
            clock=clock,
            sleep=sleep,
        )
    return CatalogProvider(image_base_url)
