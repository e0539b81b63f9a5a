"""Who is calling: the API key on a request (auth on), or nobody in particular (auth off).

A key comes as `Authorization: Bearer igs_...` or `X-API-Key: igs_...`. It is looked up in the
task store on every request, so a revoked key stops working on every replica at once. Neither the
key nor its secret is ever logged, echoed in an error or shown in /info.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve_app.api.deps import Ctx
from serve_app.errors import Forbidden
from serve_app.requests import ResolvedGenerate
from serve_app.storage.base import sanitize_user_id
from serve_app.tasks.api_keys import ApiKey, KeyLimits

AUTH_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer igs_<key_id>_<secret>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


@dataclass(frozen=True)
class Caller:
    """The key a request came with and its effective limits; `key` is None when auth is off."""

    key: ApiKey | None = None
    limits: KeyLimits | None = None

    @property
    def key_id(self) -> str | None:
        return self.key.key_id if self.key else None

    @property
    def owner(self) -> str | None:
        """The owner segment of the key's storage keys (its folder); None with auth off."""
        return self.key.user_id if self.key else None

    def rate_scope(self, request: Request) -> str:
        """Who the caller is for per-caller limits: its API key, else (keys off) the client's address
        as this replica sees it (a proxy in front makes that the proxy's)."""
        if self.key_id:
            return f"key:{self.key_id}"
        return f"addr:{request.client.host if request.client else 'unknown'}"

    def scope(self, user_id: str) -> str:
        """Who the caller is for caches and A/B arms: its API key, else the request's user id."""
        return f"key:{self.key_id}" if self.key_id else f"user:{user_id}"

    def own(self, resolved: ResolvedGenerate, user_id_given: bool) -> ResolvedGenerate:
        """The request as this caller may make it: its images under the key's user id, and its
        cost within the key's per-image limit (403 otherwise)."""
        if self.key is None:
            return resolved
        if user_id_given and sanitize_user_id(resolved.user_id) != self.key.user_id:
            raise Forbidden(
                "user_id: with API keys on, a task's user id is its key's; omit it.", error_code="USER_ID_MISMATCH"
            )
        limit = self.limits.max_pixel_steps_per_image if self.limits else None
        if limit is not None and resolved.pixel_steps_per_image > limit:
            raise Forbidden(
                f"height x width x num_inference_steps is {resolved.pixel_steps_per_image}; this API key may ask "
                "for at most "
                f"{limit} per image.",
                error_code="KEY_LIMIT_EXCEEDED",
            )
        return resolved.model_copy(update={"user_id": self.key.user_id})


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def get_caller(request: Request, ctx: Ctx) -> Caller:
    """Depends() of every route that reads or makes tasks or their files: 401 without a live key."""
    if not ctx.args.auth.enabled:
        return Caller()
    key = await asyncio.to_thread(ctx.tasks.keys.authenticate, presented_key(request))
    return Caller(key=key, limits=key.limits.over(ctx.args.auth.default_limits))


CallerDep = Annotated[Caller, Depends(get_caller)]
