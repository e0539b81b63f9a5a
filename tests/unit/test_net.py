"""SSRF guard and bounded fetching of user-supplied URLs (serve_app.net)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from serve_app import net
from serve_app.errors import ImageFetchFailed, PayloadTooLarge, UnsafeURL
from serve_app.net import FetchPolicy
from tests.support.http_server import StaticServer

PUBLIC_IP = "93.184.216.34"

FAKE_DNS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "example.com": [PUBLIC_IP],
    "images.example.com": [PUBLIC_IP],
    "rebind.example.net": [PUBLIC_IP, "10.0.0.5"],  # one private answer is enough to refuse
    "internal.example.net": ["192.168.0.10"],
    "meta.example.net": ["169.254.169.254"],
    "v6.example.net": ["2606:2800:220:1:248:1893:25c8:1946"],
}


def fake_resolver(host: str) -> list[str]:
    """Offline DNS: tests never resolve real names."""
    if host not in FAKE_DNS:
        raise OSError(f"no such host {host}")
    return FAKE_DNS[host]


POLICY = FetchPolicy()

HOSTILE = [
    ("file:///etc/passwd", "scheme"),
    ("ftp://example.com/x.png", "scheme"),
    ("gopher://example.com:70/_x", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8000/files/x.png", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", ""),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[2002:7f00:1::]/", "embeds"),  # 6to4 of 127.0.0.1
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", ""),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://1.2.3.999/", ""),
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://@example.com/", "credentials"),
    ("http:///path", "no host"),
    ("http://", ""),
    ("", "empty"),
    ("http://example.com:0/", "port"),
    ("http://example.com:70000/", "port"),
    ("http://rebind.example.net/", "resolves to an address that is private"),
    ("http://internal.example.net/a.png", "private"),
    ("http://meta.example.net/", "link-local"),
    ("http://no-such-host.invalid/", "resolve"),
    ("http://exa%41mple.com/", "host name"),
]


@pytest.mark.parametrize(("url", "why"), HOSTILE)
def test_check_url_refuses_hostile(url: str, why: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        net.check_url(url, POLICY, resolver=fake_resolver)
    assert why.lower() in info.value.message.lower()
    assert info.value.status_code == 422
    host = urlsplit(url).hostname or ""
    for address in FAKE_DNS.get(host, []):
        assert address not in info.value.message, "a resolved address is never echoed to the caller"


@pytest.mark.parametrize(("url", "why"), HOSTILE)
async def test_fetch_refuses_hostile_before_connecting(url: str, why: str) -> None:
    def must_not_send(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"connected to {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(must_not_send)) as client:
        with pytest.raises(UnsafeURL):
            await net.fetch_bytes(url, POLICY, resolver=fake_resolver, client=client)


@pytest.mark.parametrize(
    "url", ["http://example.com/a.png", "https://images.example.com:8443/x?y=1", f"http://{PUBLIC_IP}/"]
)
def test_check_url_allows_public(url: str) -> None:
    target = net.check_url(url, POLICY, resolver=fake_resolver)
    assert target.ips == (PUBLIC_IP,)


async def test_acheck_url_matches_sync() -> None:
    with pytest.raises(UnsafeURL):
        await net.acheck_url("http://localhost/", POLICY, resolver=fake_resolver)
    target = await net.acheck_url("http://example.com/", POLICY, resolver=fake_resolver)
    assert target.host == "example.com"


def test_allow_hosts_by_name_ip_and_cidr() -> None:
    assert net.check_url("http://localhost/", FetchPolicy(allow_hosts=["localhost"]), resolver=fake_resolver)
    assert net.check_url("http://10.1.2.3/", FetchPolicy(allow_hosts=["10.0.0.0/8"]))
    assert net.check_url("http://[::ffff:127.0.0.1]/", FetchPolicy(allow_hosts=["127.0.0.0/8"]))
    assert net.check_url("http://192.168.0.10/", FetchPolicy(allow_hosts=["192.168.0.10"]))
    # an allowed network does not open others, nor a name resolving outside it
    with pytest.raises(UnsafeURL):
        net.check_url("http://10.1.2.3/", FetchPolicy(allow_hosts=["127.0.0.0/8"]))
    with pytest.raises(UnsafeURL):
        net.check_url("http://localhost/", FetchPolicy(allow_hosts=["127.0.0.0/8"]), resolver=fake_resolver)
    # the scheme and credential rules hold even for allowed hosts
    with pytest.raises(UnsafeURL):
        net.check_url("ftp://127.0.0.1/", FetchPolicy(allow_hosts=["127.0.0.0/8"]))
    with pytest.raises(UnsafeURL):
        net.check_url("http://u:p@127.0.0.1/", FetchPolicy(allow_hosts=["127.0.0.0/8"]))


def test_loose_ipv4_parser() -> None:
    assert str(net.parse_loose_ipv4("2130706433")) == "127.0.0.1"
    assert str(net.parse_loose_ipv4("0177.0.0.1")) == "127.0.0.1"
    assert str(net.parse_loose_ipv4("0x7f.1")) == "127.0.0.1"
    assert str(net.parse_loose_ipv4("10.1")) == "10.0.0.1"
    assert str(net.parse_loose_ipv4("192.168.257")) == "192.168.1.1"
    assert net.parse_loose_ipv4("example.com") is None
    assert net.parse_loose_ipv4("1.example") is None
    for bad in ("1.2.3.4.5", "256.1.1.1", "08.0.0.1", "1..1", "4294967296"):
        with pytest.raises(UnsafeURL):
            net.parse_loose_ipv4(bad)


# --- real fetches against a local server (allow-listed) ---------------------------------------


@pytest.fixture
def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[StaticServer]:
    with StaticServer() as srv:
        yield srv


LOCAL = FetchPolicy(allow_hosts=["127.0.0.1"], max_bytes=4096, timeout_s=5.0, max_redirects=2)


async def test_fetch_allowed_local_image(server: StaticServer, tiny_png: bytes) -> None:
    url = server.add("/img.png", tiny_png, headers={"Content-Type": "image/png"})
    assert await net.fetch_bytes(url, LOCAL) == tiny_png
    seen = server.requests[-1]
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers.get("accept-encoding") == "identity"


async def test_fetch_is_pinned_to_the_validated_ip(server: StaticServer) -> None:
    """Resolved once, connected to that IP (no second lookup to rebind), Host header kept."""
    server.add("/a.png", b"pinned")
    calls: list[str] = []

    def rebinding(host: str) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.9.9.9"]

    url = f"http://img.test:{server.port}/a.png"
    assert await net.fetch_bytes(url, LOCAL, resolver=rebinding) == b"pinned"
    assert calls == ["img.test"]
    assert server.requests[-1].headers["host"] == f"img.test:{server.port}"


async def test_https_pinning_keeps_sni_and_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        body = await net.fetch_bytes("https://images.example.com/x.png", POLICY, resolver=fake_resolver, client=client)
        await net.fetch_bytes("https://v6.example.net:8443/y", POLICY, resolver=fake_resolver, client=client)
    assert body == b"ok"
    assert str(seen[0].url) == f"https://{PUBLIC_IP}/x.png"
    assert seen[0].headers["host"] == "images.example.com"
    assert seen[0].extensions["sni_hostname"] == "images.example.com"
    assert seen[1].url.host == "2606:2800:220:1:248:1893:25c8:1946"
    assert seen[1].headers["host"] == "v6.example.net:8443"


async def test_redirect_to_refused_address_is_refused(server: StaticServer) -> None:
    for target in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "file:///etc/passwd"):
        url = server.redirect("/r", target)
        with pytest.raises(UnsafeURL, match="Redirect"):
            await net.fetch_bytes(url, LOCAL)
    # a redirect to a name that resolves privately is checked after resolution too
    url = server.redirect("/r2", "http://internal.example.net/a.png")
    with pytest.raises(UnsafeURL):
        await net.fetch_bytes(url, LOCAL, resolver=fake_resolver)


async def test_redirects_followed_within_bound(server: StaticServer) -> None:
    server.add("/final", b"done")
    server.redirect("/r1", "/final", 301)
    server.redirect("/r2", server.url("/r1"), 307)
    assert await net.fetch_bytes(server.url("/r2"), LOCAL) == b"done"
    server.redirect("/r3", "/r2")
    with pytest.raises(ImageFetchFailed, match="redirect"):
        await net.fetch_bytes(server.url("/r3"), LOCAL)


async def test_non_2xx_names_status(server: StaticServer) -> None:
    with pytest.raises(ImageFetchFailed, match="404"):
        await net.fetch_bytes(server.url("/missing"), LOCAL)
    server.add("/err", b"x", status=503)
    with pytest.raises(ImageFetchFailed, match="503"):
        await net.fetch_bytes(server.url("/err"), LOCAL)


async def test_size_limit_content_length_and_streamed(server: StaticServer) -> None:
    big = b"x" * (LOCAL.max_bytes + 1)
    with pytest.raises(PayloadTooLarge, match=str(len(big))):
        await net.fetch_bytes(server.add("/declared", big), LOCAL)
    with pytest.raises(PayloadTooLarge):
        await net.fetch_bytes(server.add("/streamed", b"y" * 200_000, content_length=False), LOCAL)
    exact = b"z" * LOCAL.max_bytes
    assert await net.fetch_bytes(server.add("/exact", exact, content_length=False), LOCAL) == exact


async def test_compressed_response_refused(server: StaticServer) -> None:
    url = server.add("/gz", b"\x1f\x8b" + b"\0" * 20, headers={"Content-Encoding": "gzip"})
    with pytest.raises(ImageFetchFailed, match="gzip"):
        await net.fetch_bytes(url, LOCAL)


async def test_total_timeout(server: StaticServer) -> None:
    url = server.add("/stall", b"never", stall=True)
    policy = LOCAL.model_copy(update={"timeout_s": 0.5})
    with pytest.raises(ImageFetchFailed, match="timed out"):
        await net.fetch_bytes(url, policy)


async def test_connection_refused_is_fetch_failed() -> None:
    from testbed.seaweed import free_ports

    (port,) = free_ports(1)
    with pytest.raises(ImageFetchFailed):
        await net.fetch_bytes(f"http://127.0.0.1:{port}/x", LOCAL)


async def test_post_json_checks_and_does_not_follow_redirects(server: StaticServer) -> None:
    server.redirect("/hook", "http://127.0.0.1:1/elsewhere", 307)
    response = await net.post_json(server.url("/hook"), b'{"a":1}', {"X-Test": "1"}, LOCAL, 5.0)
    assert response.status_code == 307
    assert len(server.requests) == 1
    seen = server.requests[0]
    assert seen.method == "POST" and seen.body == b'{"a":1}'
    assert seen.headers["content-type"] == "application/json" and seen.headers["x-test"] == "1"
    with pytest.raises(UnsafeURL):
        await net.post_json("http://169.254.169.254/", b"{}", {}, POLICY, 5.0)
    with pytest.raises(httpx.ConnectError):
        await net.post_json("http://no-such-host.invalid/", b"{}", {}, POLICY, 5.0, resolver=fake_resolver)


async def test_post_json_timeout(server: StaticServer) -> None:
    url = server.add("/stall", stall=True)
    with pytest.raises(httpx.TimeoutException):
        await net.post_json(url, b"{}", {}, LOCAL, 0.3)
