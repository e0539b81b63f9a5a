"""Naver item -> Offer mapping: titles, prices, malls, ordering; Retry-After and backoff."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from serve_app.shopping.base import format_price, parse_price
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.naver import (
    NaverShoppingProvider,
    clean_title,
    item_to_offer,
    map_items,
    parse_retry_after,
)


def raw(title: str = "상품", lprice: object = "1000", mall: object = "몰", **extra: object) -> dict[str, object]:
    item: dict[str, object] = {
        "title": title,
        "link": "https://smartstore.naver.com/main/products/1",
        "image": "https://shopping-phinf.pstatic.net/main_1/1.jpg",
        "lprice": lprice,
        "hprice": "",
        "mallName": mall,
        "productId": "1",
        "productType": "2",
        "category1": "디지털/가전",
        "category2": "PC주변기기",
        "category3": "마우스",
        "category4": "무선마우스",
    }
    item.update(extra)
    return item


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("<b>무선</b> <b>마우스</b> M170", "무선 마우스 M170"),
        ("키보드 &amp; 마우스 &quot;세트&quot; &#39;특가&#39;", "키보드 & 마우스 \"세트\" '특가'"),
        ("<b>27인치</b>  모니터\n&lt;b&gt;", "27인치 모니터"),  # an escaped tag is markup too
        ("<span class='x'>장패드</span>", "장패드"),
        ("&lt;script&gt;alert(1)&lt;/script&gt;마우스", "alert(1)마우스"),
        ("&amp;lt;img src=x onerror=alert(1)&amp;gt;키보드", "키보드"),  # escaped twice
        ("<img src=x onerror=alert(1) 마우스", "img src=x onerror=alert(1) 마우스"),  # no tag can open
        ("3 < 5", "3 5"),  # a stray bracket is dropped too
    ],
)
def test_clean_title_is_plain_text(title: str, expected: str) -> None:
    cleaned = clean_title(title)
    assert cleaned == expected
    assert "<" not in cleaned and ">" not in cleaned, "no markup survives"


@pytest.mark.parametrize(
    ("link", "image", "kept"),
    [
        ("https://search.shopping.naver.com/p/1", "https://shopping-phinf.pstatic.net/1.jpg", True),
        ("javascript:alert(1)", "https://img/1.jpg", False),
        ("//evil.example/x", "", False),
        ("https://shop/1", "data:image/svg+xml,<svg onload=alert(1)>", True),
    ],
)
def test_offer_urls_are_http_only(link: str, image: str, kept: bool) -> None:
    mapped = item_to_offer(raw(link=link, image=image))
    assert (mapped is not None) == kept
    if mapped is not None:
        offer = mapped[1]
        assert offer.link.startswith("https://") and (offer.image == "" or offer.image.startswith("https://"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("21990", 21990),
        (" 21,990 ", 21990),
        (21990, 21990),
        ("", None),
        (None, None),
        ("0", None),
        (0, None),
        ("-5", None),
        ("12.5", None),
        ("가격문의", None),
        ("１２３", None),  # full-width digits are not a wire price
        (True, None),
    ],
)
def test_parse_price(value: object, expected: int | None) -> None:
    assert parse_price(value) == expected


def test_format_price() -> None:
    assert format_price(21990) == "21990원"


def test_item_to_offer_maps_every_field() -> None:
    mapped = item_to_offer(raw("<b>무선</b> 마우스 &amp; 패드", "21990", "오피스몰"))
    assert mapped is not None
    price, offer = mapped
    assert price == 21990
    assert offer.model_dump() == {
        "title": "무선 마우스 & 패드",
        "price": "21990원",
        "mall": "오피스몰",
        "category3": "마우스",
        "category4": "무선마우스",
        "link": "https://smartstore.naver.com/main/products/1",
        "image": "https://shopping-phinf.pstatic.net/main_1/1.jpg",
    }


@pytest.mark.parametrize("mall", ["", "   ", None])
def test_empty_mall_becomes_naver(mall: object) -> None:
    mapped = item_to_offer(raw(mall=mall))
    assert mapped is not None and mapped[1].mall == "네이버"


def test_missing_mall_key_becomes_naver() -> None:
    item = raw()
    del item["mallName"]
    mapped = item_to_offer(item)
    assert mapped is not None and mapped[1].mall == "네이버"


@pytest.mark.parametrize("bad", [None, "string", 5, [], {"title": None, "lprice": "1000"}])
def test_item_to_offer_rejects_non_items(bad: object) -> None:
    assert item_to_offer(bad) is None


def test_map_items_sorts_numerically_skips_unpriced_and_limits() -> None:
    items = [
        raw("a", "9000"),
        raw("b", "10000"),
        raw("c", ""),
        raw("d", "1500"),
        "garbage",
        raw("e", "0"),
        raw("f", "1500"),
        raw("g", 700),
    ]
    offers = map_items(items, 4)
    # numeric, not string order ("10000" < "1500" < "9000" as strings); ties keep wire order
    assert [o.title for o in offers] == ["g", "d", "f", "a"]
    assert [o.price for o in offers] == ["700원", "1500원", "1500원", "9000원"]
    assert map_items(items, 10)[-1].title == "b"
    assert map_items([], 3) == []


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 5, usegmt=True), now=now) == pytest.approx(5.0)
    assert parse_retry_after(formatdate(now - 5, usegmt=True), now=now) == 0.0


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    provider = NaverShoppingProvider(
        ShoppingConfig(), client_id="i", client_secret="s", backoff_base_s=0.5, backoff_max_s=4.0
    )
    assert [provider.backoff_s(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert provider.backoff_s(0, retry_after_s=3.0) == 3.0
    assert provider.backoff_s(2, retry_after_s=0.1) == 2.0
    assert provider.backoff_s(0, retry_after_s=3600.0) == 30.0  # a huge Retry-After is capped
