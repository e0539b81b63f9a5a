"""Shopping offers: Naver Shopping or the offline catalog (`shopping:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ShoppingConfig(BaseModel):
    provider: Literal["auto", "naver", "catalog"] = Field(
        default="auto", description="auto: naver when NAVER_CLIENT_ID/SECRET are set, else catalog."
    )
    naver_base_url: str = "https://openapi.naver.com"
    offers_per_item: int = Field(default=3, ge=1, le=10)
    cache_ttl_s: float = Field(default=600.0, ge=0)
    cache_max_entries: int = Field(default=2048, ge=0)
    rate_limit_per_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    fallback_to_catalog: bool = Field(
        default=False, description="When Naver fails for an item, answer it from the offline catalog."
    )
