"""Safe fetching of user-supplied URLs (initial images, webhooks): SSRF guard, bounded size and time.

Every URL is checked before any connection: http(s) only, no userinfo, a host, a port in 1-65535.
The host is resolved (IP literals, including odd IPv4 spellings such as `2130706433`, `0x7f.1`,
`127.1`, are parsed the way browsers and `inet_aton` do) and EVERY address it resolves to must be
public (not loopback, private, CGNAT, link-local/metadata, unique-local, multicast, unspecified,
reserved, nor an IPv4-mapped/6to4/NAT64 form of those) unless the host name, the IP or a CIDR holding
it is listed in `FetchPolicy.allow_hosts`. Redirects are followed by hand and each hop is checked again.

DNS rebinding is defeated by pinning: the request is sent to the validated IP itself (the URL's host
is replaced by the IP) while the `Host` header keeps the original host and, for https, the
`sni_hostname` request extension keeps TLS SNI and certificate verification on the host name. So
the address that was checked is the address connected to; nothing resolves the name a second time.
Clients made here ignore proxy environment variables (`trust_env=False`), which would defeat pinning.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from serve_app.errors import UnsafeURL
from serve_app.net.policy import FetchPolicy

Resolver = Callable[[str], list[str]]
"""Host name -> IP address strings. Blocking; called in a worker thread from async code."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_RESPONSE_BODY_FOR_POST = 64 * 1024  # webhook receivers' answers are only logged
USER_AGENT = "imagegen-serve/0.1"

_HOSTNAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})?(\.[a-z0-9_]([a-z0-9_-]{0,62})?)*\.?$")
_NAT64_NETS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (pinned IPs) and what to tell the server (host)."""

    url: httpx.URL
    host: str
    port: int
    ips: tuple[str, ...]


class UnresolvableHost(UnsafeURL):
    """The host name did not resolve (DNS failure); a transient condition for webhooks."""

    default_message = "URL host could not be resolved."


def default_resolver(host: str) -> list[str]:
    """All addresses of `host` from the system resolver, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


# --- parsing -----------------------------------------------------------------------------------


def _parse_ipv4_number(part: str) -> int | None:
    """One part of a loose IPv4 address (decimal, 0-prefixed octal, 0x hex), or None if not numeric."""
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits and digits.isalnum() else None
    except ValueError:
        return None


def parse_loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a browser / inet_aton reads in `host` (`2130706433`, `0177.0.0.1`, `0x7f.1`).

    Returns None when the host is a domain name (its last label is not a number). Raises UnsafeURL
    when it ends in a number but is not a valid address (`1.2.3.999`), as the WHATWG URL spec does.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    last = parts[-1]
    if not (last.isdigit() or (last[:2].lower() == "0x" and _parse_ipv4_number(last) is not None)):
        return None
    numbers = [_parse_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UnsafeURL(f"URL host {host!r} is not a valid IPv4 address.")
    nums = [n for n in numbers if n is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise UnsafeURL(f"URL host {host!r} is not a valid IPv4 address.")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _parse_url(url: str) -> tuple[httpx.URL, str, int, IPAddress | None]:
    """Syntactic checks; returns (url, lower-case host, port, IP if the host is a literal)."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("URL is empty.")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeURL(f"URL is malformed: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(f"URL scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https.")
    if parsed.userinfo or "@" in urlsplit(url.strip()).netloc:
        raise UnsafeURL("URLs with credentials (user:pass@host) are not allowed.")
    raw_host = parsed.raw_host.decode("ascii", errors="replace").lower()
    if not raw_host:
        raise UnsafeURL("URL has no host.")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise UnsafeURL(f"URL port {port} is out of range.")
    if ":" in raw_host:  # httpx strips the brackets of an IPv6 literal
        try:
            return parsed, raw_host, port, ipaddress.IPv6Address(unquote(raw_host))
        except ValueError as exc:
            raise UnsafeURL(f"URL host {raw_host!r} is not a valid IPv6 address.") from exc
    loose = parse_loose_ipv4(raw_host)
    if loose is not None:
        return parsed, raw_host, port, loose
    if not _HOSTNAME_RE.match(raw_host) or len(raw_host) > 253:
        raise UnsafeURL(f"URL host {raw_host!r} is not a valid host name.")
    return parsed, raw_host.rstrip("."), port, None


# --- address policy ----------------------------------------------------------------------------


def _normalise_ip(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a request must not go to `ip`, or None when it is a public unicast address."""
    ip = _normalise_ip(ip)
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _NAT64_NETS):
        inner = forbidden_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return f"NAT64 of a {inner} IPv4 address" if inner else None
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (incl. cloud metadata)"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "carrier-grade NAT (100.64/10)"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"), "unique-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    ]
    for hit, reason in checks:
        if hit:
            return reason
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.sixtofour
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner:
                return f"embeds a {inner} IPv4 address"
    return None


def _allow_lists(policy: FetchPolicy) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in policy.allow_hosts:
        entry = entry.strip().lower()
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, nets


def _check_ips(host: str, ip_strings: list[str], policy: FetchPolicy) -> tuple[str, ...]:
    """Every address must be allowed; returns them as connectable strings (mapped IPv6 -> IPv4)."""
    if not ip_strings:
        raise UnsafeURL(f"Host {host!r} did not resolve to any address.")
    names, nets = _allow_lists(policy)
    host_allowed = host in names
    out: list[str] = []
    for raw in ip_strings:
        try:
            ip = _normalise_ip(ipaddress.ip_address(raw))
        except ValueError as exc:
            raise UnsafeURL(f"Host {host!r} resolved to an invalid address {raw!r}.") from exc
        allowed = host_allowed or any(ip.version == net.version and ip in net for net in nets)
        if not allowed:
            reason = forbidden_reason(ip)
            if reason is not None:
                # The resolved address is never echoed: it would map internal names for a caller.
                where = f"{host!r}" if host == str(ip) else f"{host!r} resolves to an address that"
                raise UnsafeURL(f"URL host {where} is {reason}; requests there are not allowed.")
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def _resolve_sync(host: str, literal: IPAddress | None, resolver: Resolver | None) -> list[str]:
    if literal is not None:
        return [str(literal)]
    try:
        return list((resolver or default_resolver)(host))
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHost(f"Host {host!r} could not be resolved.") from exc


def check_url(url: str, policy: FetchPolicy, *, resolver: Resolver | None = None) -> Target:
    """The checked target of `url`, or UnsafeURL (422) naming why it must not be fetched.

    Blocks on DNS; async code should call `acheck_url`. A host that does not resolve raises
    UnresolvableHost (an UnsafeURL).
    """
    parsed, host, port, literal = _parse_url(url)
    ips = _check_ips(host, _resolve_sync(host, literal, resolver), policy)
    return Target(parsed, host, port, ips)


class DnsPool:
    """Name lookups on threads of their own, bounded in number and time.

    `getaddrinfo` cannot be interrupted, so a resolver that never answers keeps its thread. On the
    default executor that would starve everything else that uses it (the task store, image
    decoding); here a stuck lookup holds one of `max_concurrency` slots until its thread returns,
    and a caller waits at most `timeout_s` in all, then gets UnresolvableHost (a 422, or a retry
    for a webhook). Nothing else ever waits on these threads.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dns")
        self._slots = threading.BoundedSemaphore(max_concurrency)

    async def resolve(self, host: str, resolver: Resolver | None, timeout_s: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._slots.acquire(blocking=False):  # every lookup thread is busy (or stuck)
            if loop.time() >= deadline:
                raise UnresolvableHost(f"Looking up {host!r} timed out (the resolver is not answering).")
            await asyncio.sleep(0.02)
        try:
            future = loop.run_in_executor(self._executor, _resolve_sync, host, None, resolver)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())  # when the thread is really free
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline - loop.time()))
        except TimeoutError as exc:
            raise UnresolvableHost(f"Looking up {host!r} timed out after {timeout_s:g} s.") from exc


_pools: dict[int, DnsPool] = {}
_pools_lock = threading.Lock()


def dns_pool(max_concurrency: int) -> DnsPool:
    """The process's DNS pool of that size (one per process and size, made on first use)."""
    with _pools_lock:
        pool = _pools.get(max_concurrency)
        if pool is None:
            pool = _pools[max_concurrency] = DnsPool(max_concurrency)
        return pool


async def acheck_url(url: str, policy: FetchPolicy, *, resolver: Resolver | None = None) -> Target:
    """`check_url` for async code: DNS runs on the bounded DNS pool with `policy.dns_timeout_s`."""
    parsed, host, port, literal = _parse_url(url)
    if literal is not None:
        ips = [str(literal)]
    else:
        ips = await dns_pool(policy.dns_max_concurrency).resolve(host, resolver, policy.dns_timeout_s)
    return Target(parsed, host, port, _check_ips(host, ips, policy))
