"""Requests to a checked URL, pinned to the addresses that were checked (see serve_app.net.guard)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from serve_app.errors import ImageFetchFailed, PayloadTooLarge, UnsafeURL
from serve_app.net.guard import (
    MAX_RESPONSE_BODY_FOR_POST,
    REDIRECT_STATUSES,
    USER_AGENT,
    Resolver,
    Target,
    UnresolvableHost,
    acheck_url,
)
from serve_app.net.policy import FetchPolicy


def _pinned_request(
    client: httpx.AsyncClient,
    method: str,
    target: Target,
    ip: str,
    headers: dict[str, str],
    content: bytes | None,
    timeout_s: float,
) -> httpx.Request:
    """A request to `ip` that still says `Host: <host>` and verifies TLS against the host name."""
    extensions: dict[str, str] = {}
    if target.url.scheme == "https" and target.host != ip:
        extensions["sni_hostname"] = target.host
    merged = {"Host": target.url.netloc.decode("ascii"), "User-Agent": USER_AGENT, **headers}
    return client.build_request(
        method,
        target.url.copy_with(host=ip),
        headers=merged,
        content=content,
        timeout=httpx.Timeout(timeout_s),
        extensions=extensions,
    )


async def _send_pinned(
    client: httpx.AsyncClient,
    method: str,
    target: Target,
    headers: dict[str, str],
    content: bytes | None,
    timeout_s: float,
) -> httpx.Response:
    """Send to the first validated IP that accepts a connection; the response is streamed."""
    last: httpx.ConnectError | None = None
    for ip in target.ips:
        request = _pinned_request(client, method, target, ip, headers, content, timeout_s)
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None
    raise last


def _new_client(timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout_s))


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The undecoded body in chunks (an injected client's in-memory response comes whole)."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


async def _read_bounded(response: httpx.Response, max_bytes: int) -> bytes:
    """The raw body, or PayloadTooLarge as soon as it passes `max_bytes` (checked up front too)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The image at the URL is {int(declared)} bytes; the limit is {max_bytes}.")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity; decoding here could expand a small body without bound.
        raise ImageFetchFailed(f"Compressed responses ({encoding}) are not accepted.")
    chunks: list[bytes] = []
    total = 0
    async for chunk in _raw_chunks(response):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"The image at the URL is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_bytes(
    url: str,
    policy: FetchPolicy,
    *,
    resolver: Resolver | None = None,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """GET `url` safely: every hop checked and pinned, at most policy.max_bytes in policy.timeout_s.

    Raises UnsafeURL (refused target, also after a redirect), PayloadTooLarge (body too big),
    ImageFetchFailed (non-2xx with the status in the message, too many redirects, network error,
    timeout). An injected `client` should be made with trust_env=False (a proxy defeats pinning).
    """
    own = client is None
    http = client or _new_client(policy.timeout_s)
    current = url
    try:
        async with asyncio.timeout(policy.timeout_s):
            for hop in range(policy.max_redirects + 1):
                try:
                    target = await acheck_url(current, policy, resolver=resolver)
                except UnsafeURL as exc:
                    if hop:
                        raise UnsafeURL(f"Redirect to a refused URL: {exc.message}") from exc
                    raise
                headers = {"Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"}
                response = await _send_pinned(http, "GET", target, headers, None, policy.timeout_s)
                try:
                    if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                        if hop >= policy.max_redirects:
                            raise ImageFetchFailed(f"Too many redirects (more than {policy.max_redirects}).")
                        try:
                            current = str(target.url.join(response.headers["location"]))
                        except (httpx.InvalidURL, ValueError) as exc:
                            raise UnsafeURL("Redirect to a malformed URL.") from exc
                        continue
                    if not 200 <= response.status_code < 300:
                        failed = ImageFetchFailed(f"Fetching the image failed with HTTP {response.status_code}.")
                        failed.upstream_status = response.status_code
                        raise failed
                    return await _read_bounded(response, policy.max_bytes)
                finally:
                    await response.aclose()
            raise ImageFetchFailed("Too many redirects.")  # pragma: no cover - loop always returns/raises
    except TimeoutError as exc:
        raise ImageFetchFailed(f"Fetching the image timed out after {policy.timeout_s:g} s.") from exc
    except httpx.TimeoutException as exc:
        raise ImageFetchFailed(f"Fetching the image timed out after {policy.timeout_s:g} s.") from exc
    except httpx.HTTPError as exc:
        raise ImageFetchFailed(f"Fetching the image failed: {type(exc).__name__}.") from exc
    finally:
        if own:
            await http.aclose()


async def post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: FetchPolicy,
    timeout_s: float,
    *,
    resolver: Resolver | None = None,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """POST a JSON body to a checked, pinned URL; redirects are not followed (a 3xx is returned).

    Raises UnsafeURL for a refused target and httpx.TransportError (httpx.TimeoutException when the
    `timeout_s` total is spent, httpx.ConnectError when DNS or connect fails) for network failures.
    The returned response holds at most 64 KiB of the receiver's body.
    """
    own = client is None
    http = client or _new_client(timeout_s)
    try:
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    target = await acheck_url(url, policy, resolver=resolver)
                except UnresolvableHost as exc:
                    raise httpx.ConnectError(exc.message) from exc
                merged = {"Content-Type": "application/json", **headers}
                response = await _send_pinned(http, "POST", target, merged, body, timeout_s)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in _raw_chunks(response):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= MAX_RESPONSE_BODY_FOR_POST:
                            break
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise httpx.TimeoutException(f"POST timed out after {timeout_s:g} s.") from exc
        dropped = {"content-encoding", "content-length", "transfer-encoding"}
        out_headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
        return httpx.Response(
            response.status_code,
            headers=out_headers,
            content=b"".join(chunks)[:MAX_RESPONSE_BODY_FOR_POST],
            request=response.request,
        )
    finally:
        if own:
            await http.aclose()
