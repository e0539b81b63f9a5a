"""How user-supplied URLs are fetched (`fetch:`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FetchPolicy(BaseModel):
    """How user-supplied URLs (images, webhooks) are fetched."""

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts/IPs/CIDRs that may be private or loopback (tests, in-cluster services).",
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, description="Largest body read.")
    timeout_s: float = Field(default=10.0, description="Total time for one fetch.")
    max_redirects: int = Field(default=3, ge=0, le=10)
    dns_timeout_s: float = Field(default=3.0, gt=0, le=60, description="Longest wait for one name lookup.")
    dns_max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Lookups in flight at once, on their own threads (never the shared pool)."
    )
