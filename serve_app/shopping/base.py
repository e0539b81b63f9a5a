"""The shopping provider interface and helpers shared by the providers (the factory is `factory.py`).

A provider turns one detected desk item into offers in the source spec's schema (`Offer`), cheapest
first. Two exist: the Naver Shopping search API and an offline catalog shipped with the package
(the default when no Naver credentials are set, so the app runs with no keys and no network).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from serve_app.settings import Settings
from serve_app.shopping.config import ShoppingConfig
from serve_app.stages import DeskItem, Offer

Clock = Callable[[], float]
"""Monotonic seconds; injectable so tests can run time forward without waiting."""
Sleep = Callable[[float], Awaitable[None]]
"""`asyncio.sleep`-compatible; injectable for the same reason."""

DEFAULT_MALL = "네이버"  # seed: the mall is 네이버 when the provider names none
SORT_ASC = "asc"  # lowest price first, the only order the app asks for


@runtime_checkable
class ShoppingProvider(Protocol):
    """Finds offers for one desk item; raises `AppError` subclasses on failure."""

    name: str

    async def search(self, item: DeskItem, limit: int) -> list[Offer]:
        """Up to `limit` offers for `item`, lowest price first."""
        ...


def parse_price(value: object) -> int | None:
    """A positive whole KRW amount from `21990`, `"21990"` or `"21,990"`; None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        digits = value.strip().replace(",", "")
        if digits.isascii() and digits.isdigit():
            amount = int(digits)
            return amount if amount > 0 else None
    return None


def format_price(amount: int) -> str:
    """The source spec's price format: `21990원`."""
    return f"{amount}원"


def has_naver_credentials(settings: Settings) -> bool:
    """Both Naver keys are set to something non-blank."""
    return bool((settings.naver_client_id or "").strip() and (settings.naver_client_secret or "").strip())


def provider_name(cfg: ShoppingConfig, settings: Settings) -> str:
    """Which provider `cfg.provider` means here: `auto` is Naver when both keys are set, else the catalog."""
    if cfg.provider == "auto":
        return "naver" if has_naver_credentials(settings) else "catalog"
    return cfg.provider
