"""Offline catalog: coverage of the vocabulary, schema parity with Naver, order, shipped files."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from serve_app.errors import ConfigurationError
from serve_app.paths import load_yaml_config
from serve_app.settings import Settings
from serve_app.shopping.base import ShoppingProvider
from serve_app.shopping.catalog import CATALOG_IMAGES_DIR, CATALOG_JSON, CatalogProvider
from serve_app.shopping.config import ShoppingConfig
from serve_app.shopping.factory import make_provider
from serve_app.shopping.naver import NaverShoppingProvider
from serve_app.stages import DeskItem, Offer

BASE = "http://host:8000/static"
_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_catalog.py"
_spec = importlib.util.spec_from_file_location("make_catalog", _SCRIPT)
assert _spec is not None and _spec.loader is not None
make_catalog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_catalog)
VOCABULARY = [
    DeskItem(name=e["name"], english=e["english"], query=e["query"])
    for e in load_yaml_config("desk_items.yaml")["items"]
]
PRICE = re.compile(r"^[1-9][0-9]*원$")


@pytest.fixture(scope="module")
def catalog() -> CatalogProvider:
    return CatalogProvider(BASE)


def price(offer: Offer) -> int:
    return int(offer.price.removesuffix("원"))


def test_catalog_size_and_vocabulary_coverage(catalog: CatalogProvider) -> None:
    assert len(catalog.products) >= 150
    names = {item.name for item in VOCABULARY}
    assert catalog.categories == names  # every category is a vocabulary item and vice versa
    for name in names:
        assert sum(p.category3 == name for p in catalog.products) >= 5, name
    assert len({p.id for p in catalog.products}) == len(catalog.products)
    assert any(p.mall == "" for p in catalog.products)  # exercises the 네이버 mapping


def test_images_are_shipped_small_pngs(catalog: CatalogProvider) -> None:
    files = sorted(CATALOG_IMAGES_DIR.glob("*.png"))
    assert {f.name for f in files} == {p.image for p in catalog.products}
    assert sum(f.stat().st_size for f in files) < 1_500_000
    with Image.open(files[0]) as img:
        assert img.format == "PNG" and img.size == (96, 96)


@pytest.mark.parametrize("item", VOCABULARY, ids=lambda i: i.english)
async def test_every_item_gets_three_cheapest_first_offers(catalog: CatalogProvider, item: DeskItem) -> None:
    offers = await catalog.search(item, 3)
    assert len(offers) == 3
    assert [price(o) for o in offers] == sorted(price(o) for o in offers)
    for offer in offers:
        assert set(offer.model_dump()) == set(Offer.model_fields)
        assert PRICE.match(offer.price) and offer.mall and offer.title
        assert offer.category3 == item.name and offer.category4
        assert offer.link.startswith("https://search.shopping.naver.com/search/all?query=")
        assert offer.image.startswith(f"{BASE}/catalog/images/")
        assert (CATALOG_IMAGES_DIR / offer.image.rsplit("/", 1)[1]).is_file()


async def test_query_words_pick_the_matching_products(catalog: CatalogProvider) -> None:
    wireless = await catalog.search(DeskItem(name="마우스", english="mouse", query="무선 마우스"), 3)
    assert all("무선" in o.title for o in wireless)
    # a wider limit falls back to the whole category, still cheapest first
    everything = await catalog.search(DeskItem(name="마우스", english="mouse", query="무선 마우스"), 10)
    assert len(everything) == 10 and [price(o) for o in everything] == sorted(price(o) for o in everything)


async def test_unknown_item_is_matched_by_query_words(catalog: CatalogProvider) -> None:
    offers = await catalog.search(DeskItem(name="충전패드", english="pad", query="무선충전 패드"), 3)
    assert offers and all("무선충전" in o.title and "패드" in o.title for o in offers)
    assert [price(o) for o in offers] == sorted(price(o) for o in offers)
    assert await catalog.search(DeskItem(name="우주선", english="rocket", query="로켓 발사대"), 3) == []


async def test_empty_mall_is_naver(catalog: CatalogProvider) -> None:
    product = next(p for p in catalog.products if p.mall == "")
    assert catalog.to_offer(product).mall == "네이버"


def test_image_base_url_trailing_slash(catalog: CatalogProvider) -> None:
    provider = CatalogProvider(BASE + "/")
    assert provider.to_offer(provider.products[0]).image.startswith(f"{BASE}/catalog/images/")


def test_missing_catalog_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="catalog"):
        CatalogProvider(BASE, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"products": [{"title": 1}]}')
    with pytest.raises(ConfigurationError):
        CatalogProvider(BASE, tmp_path / "bad.json")


def test_make_catalog_is_deterministic_and_shipped_files_are_current(tmp_path: Path) -> None:
    count = make_catalog.write_catalog(tmp_path)
    assert count == len(json.loads(CATALOG_JSON.read_text(encoding="utf-8"))["products"])
    assert (tmp_path / "catalog.json").read_bytes() == CATALOG_JSON.read_bytes()
    for generated in sorted((tmp_path / "images").glob("*.png")):
        assert generated.read_bytes() == (CATALOG_IMAGES_DIR / generated.name).read_bytes(), generated.name


@pytest.mark.parametrize(
    ("kind", "creds", "expected"),
    [
        ("auto", False, CatalogProvider),
        ("auto", True, NaverShoppingProvider),
        ("catalog", True, CatalogProvider),
        ("naver", True, NaverShoppingProvider),
    ],
)
def test_make_provider_selects(kind: str, creds: bool, expected: type) -> None:
    settings = Settings(naver_client_id="id" if creds else None, naver_client_secret="secret" if creds else None)
    provider = make_provider(ShoppingConfig(provider=kind), settings, BASE)  # type: ignore[arg-type]
    assert isinstance(provider, expected)
    assert isinstance(provider, ShoppingProvider)


@pytest.mark.parametrize(("cid", "secret"), [(None, None), ("id", None), ("  ", "secret")])
def test_naver_without_keys_is_a_configuration_error(cid: str | None, secret: str | None) -> None:
    settings = Settings(naver_client_id=cid, naver_client_secret=secret)
    with pytest.raises(ConfigurationError, match="NAVER_CLIENT_ID"):
        make_provider(ShoppingConfig(provider="naver"), settings, BASE)
    assert isinstance(make_provider(ShoppingConfig(provider="auto"), settings, BASE), CatalogProvider)
