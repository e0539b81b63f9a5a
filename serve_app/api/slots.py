"""Slots for long requests, so one caller cannot take the ingress: caps per caller and in all, and
a deadline on receiving a request body.

Long requests are the event streams, the routes that wait for a task, and uploads while they are
received (a route's multipart body): such a route declares `dependencies=[LONG]` (or
`[LONG_UPLOADS]`), which takes the slots before the route reads an upload or waits; this
middleware gives them back when the whole response has gone (a stream's last byte), whatever
happened. Each long request holds one of its caller's slots and one of the replica's:

- per caller (`long_requests.per_caller`): with API keys on, the id of the key the request
  presents; else the client's address; that address is the TCP peer's, or the first hop of
  `long_requests.client_ip_header` (e.g. X-Forwarded-For) when the peer is one of
  `trusted_proxies`. Past the cap: 429 TOO_MANY_LONG_REQUESTS with Retry-After.
- in all (`long_requests.total`): kept below the Ingress's `max_ongoing_requests`, so short
  requests (/healthcheck, /info, polls, submits) always find a slot. Past it: 503
  LONG_REQUESTS_BUSY with Retry-After.

Both in the route's own error shape. A repeated Idempotency-Key is a long request like any other,
so resending a waiting request cannot go around the caps.

Ray's own `x-request-timeout-seconds` (and `x-request-disconnect-disabled`) header is read by
Serve before this app sees the request: it sets Serve's timeout for that request (0 turns it
off), and no app code can strip it (ray/serve/_private/http_util.py `parse_request_timeout_header`,
read in the proxy and in the direct-ingress replica). It cannot lift this app's limits: every long
request ends on its own bound whatever Serve's timeout is (a wait's `openai.max_wait_s`, a stream's
`events.max_stream_s`, a body's `body_timeout_s` here), and the caps count it all the while.

Body deadline: a request whose body has not fully arrived `body_timeout_s` after the request
began (a trickled upload, "slowloris") is answered 408 REQUEST_TIMEOUT and its slot released.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

from fastapi import Depends, Request

from serve_app.api.deps import current_context
from serve_app.api.errors import error_response
from serve_app.errors import RequestTimeout, ServiceUnavailable, TooManyRequests

logger = logging.getLogger(__name__)

SCOPE_KEY = "imagegen.long_slot"


class _BodyTimeout(Exception):
    """Raised inside `receive` when the body's deadline passes."""


class Slots:
    """Counts of long requests held, in all and per caller, on one replica."""

    def __init__(self) -> None:
        self.total = 0
        self.by_caller: dict[str, int] = {}

    def take(self, caller: str, per_caller: int, total: int, retry_after_s: int) -> None:
        if self.by_caller.get(caller, 0) >= per_caller:
            raise TooManyRequests(
                f"This caller already has {per_caller} long requests open (event streams, waiting routes, "
                "uploads); close one or retry later.",
                error_code="TOO_MANY_LONG_REQUESTS",
                retry_after_s=retry_after_s,
            )
        if self.total >= total:
            raise ServiceUnavailable(
                "The server has no room for another long request (event stream, waiting route, upload) right "
                "now; retry later, or poll GET /v1/result/{task_id}.",
                error_code="LONG_REQUESTS_BUSY",
                headers={"Retry-After": str(retry_after_s)},
            )
        self.total += 1
        self.by_caller[caller] = self.by_caller.get(caller, 0) + 1

    def give(self, caller: str) -> None:
        self.total -= 1
        left = self.by_caller.get(caller, 0) - 1
        if left > 0:
            self.by_caller[caller] = left
        else:
            self.by_caller.pop(caller, None)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _trusted(peer: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def caller_of(scope: dict[str, Any], config: Any, keys_on: bool) -> str:
    """Whose slots a request takes: with API keys on, the presented key's id (a key that turns out
    not to be live is refused by the route at once, before it waits or reads an upload); else, and
    without a key, the client's address (see the module doc)."""
    authorization = _header(scope, b"authorization") or ""
    scheme, _, token = authorization.partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else (_header(scope, b"x-api-key") or "").strip()
    if keys_on and key.startswith("igs_") and key.count("_") >= 2:
        return "key:" + key.split("_")[1][:64]  # igs_<key_id>_<secret>: the id, never the secret
    peer = (scope.get("client") or ("unknown", 0))[0]
    if config.client_ip_header and _trusted(peer, config.trusted_networks()):
        forwarded = _header(scope, config.client_ip_header.lower().encode("latin-1"))
        if forwarded and forwarded.split(",")[0].strip():
            return "ip:" + forwarded.split(",")[0].strip()[:64]
    return "ip:" + str(peer)


class _Holder:
    """One request's claim on the slots: taken by the route's dependency, given back by the middleware."""

    def __init__(self, slots: Slots, scope: dict[str, Any]) -> None:
        self.slots, self.scope = slots, scope
        self.caller: str | None = None

    def take(self, uploads_only: bool) -> None:
        ctx = current_context()
        if self.caller is not None or ctx is None:
            return
        if uploads_only and not (_header(self.scope, b"content-type") or "").lower().startswith("multipart/"):
            return
        config = ctx.args.long_requests
        caller = caller_of(self.scope, config, ctx.args.auth.enabled)
        self.slots.take(caller, config.per_caller, config.total, config.retry_after_s)
        self.caller = caller

    def give_back(self) -> None:
        if self.caller is not None:
            self.slots.give(self.caller)
            self.caller = None


async def _take_long(request: Request) -> None:
    holder = request.scope.get(SCOPE_KEY)
    if isinstance(holder, _Holder):
        holder.take(uploads_only=False)


async def _take_upload(request: Request) -> None:
    holder = request.scope.get(SCOPE_KEY)
    if isinstance(holder, _Holder):
        holder.take(uploads_only=True)


# Module-level functions, not closures: Serve pickles the app, and a closure is pickled by value
# with only the globals its code names, so its string annotation `Request` would not resolve there.
LONG = Depends(_take_long)  # an event stream, a route that waits for its task
LONG_UPLOADS = Depends(_take_upload)  # a route whose multipart body is an upload


class LongRequestSlots:
    """ASGI middleware: gives a request's slots back when it has ended, and the body deadline
    (config `long_requests:`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.slots = Slots()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ctx = current_context()
        if scope["type"] != "http" or ctx is None:
            await self.app(scope, receive, send)
            return
        holder = _Holder(self.slots, scope)
        scope[SCOPE_KEY] = holder
        path = scope.get("path", "")
        timeout_s = ctx.args.long_requests.body_timeout_s
        started = {"response": False}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started["response"] = True
            await send(message)

        try:
            await self.app(scope, _deadline(receive, timeout_s), sending)
        except _BodyTimeout:
            logger.info("cut %s after %.0f s without its whole body", path, timeout_s)
            if not started["response"]:
                error = RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.")
                ctx.metrics.rejected(error.status_code, error.error_code)
                await error_response(path, error)(scope, receive, sending)
        finally:
            holder.give_back()


def _deadline(receive: Any, seconds: float) -> Any:
    """`receive` whose body messages must all have come `seconds` after the request began."""
    deadline = time.monotonic() + seconds
    body_done = False

    async def bounded() -> dict[str, Any]:
        nonlocal body_done
        if body_done:
            return await receive()  # after the body: only the disconnect, whenever it comes
        left = deadline - time.monotonic()
        if left <= 0:
            raise _BodyTimeout
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            raise _BodyTimeout from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return bounded
