"""Offline catalog provider: searches the product list shipped in `serve_app/data/catalog`.

The default when no Naver keys are set, so recommendations work with no network. Answers use
exactly Naver's offer schema. An item whose Korean name is a catalog category gets that
category's products; any other item is matched by its query's words against titles and
sub-categories; products matching more of the query's words are preferred (as a Naver search for
the query would), and the answer is always cheapest first.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from serve_app.errors import ConfigurationError
from serve_app.paths import PACKAGE_DATA_DIR
from serve_app.shopping.base import DEFAULT_MALL, format_price
from serve_app.stages import DeskItem, Offer

CATALOG_DIR = PACKAGE_DATA_DIR / "catalog"
CATALOG_JSON = CATALOG_DIR / "catalog.json"
CATALOG_IMAGES_DIR = CATALOG_DIR / "images"
"""Served by the ingress under `{image_base_url}/catalog/images/` (e.g. /static/catalog/images/)."""


class CatalogProduct(BaseModel):
    """One row of catalog.json (written by scripts/make_catalog.py)."""

    id: str
    title: str
    price: int
    mall: str = ""
    category3: str
    category4: str = ""
    link: str
    image: str = ""  # file name under images/


class CatalogFile(BaseModel):
    version: int = 1
    currency: str = "KRW"
    products: list[CatalogProduct]


def _tokens(text: str) -> list[str]:
    return [token for token in text.lower().split() if token]


class CatalogProvider:
    """`ShoppingProvider` over the shipped catalog; `image_base_url` prefixes the image paths."""

    name = "catalog"

    def __init__(self, image_base_url: str, catalog_path: Path = CATALOG_JSON) -> None:
        self.image_base_url = image_base_url.rstrip("/")
        try:
            doc = CatalogFile.model_validate_json(catalog_path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            raise ConfigurationError(f"Offline shopping catalog {catalog_path} is missing or invalid: {exc}") from exc
        # Sorted once by price (then id, for a stable order): every answer is then a filter of it.
        self.products = sorted(doc.products, key=lambda p: (p.price, p.id))
        self.categories = {p.category3 for p in self.products}

    def to_offer(self, product: CatalogProduct) -> Offer:
        """The product in the source spec's offer schema, image as a URL the ingress serves."""
        image = f"{self.image_base_url}/catalog/images/{product.image}" if product.image else ""
        return Offer(
            title=product.title,
            price=format_price(product.price),
            mall=product.mall.strip() or DEFAULT_MALL,
            category3=product.category3,
            category4=product.category4,
            link=product.link,
            image=image,
        )

    def match(self, item: DeskItem, limit: int) -> list[CatalogProduct]:
        """Up to `limit` products for `item`, cheapest first.

        The pool is the item's category when the catalog has it, else every product sharing a
        word with the query. Within the pool the products matching the most query words win;
        the bar drops a word at a time until there are `limit` of them.
        """
        words = _tokens(item.query) or _tokens(item.name)
        in_category = item.name in self.categories
        pool = [p for p in self.products if p.category3 == item.name] if in_category else self.products
        scored = [(sum(1 for w in words if w in f"{p.title} {p.category4}".lower()), p) for p in pool]
        if not in_category:
            scored = [(score, p) for score, p in scored if score > 0]
        chosen: list[CatalogProduct] = []
        for bar in sorted({score for score, _ in scored}, reverse=True):
            chosen = [p for score, p in scored if score >= bar]  # pool order: cheapest first
            if len(chosen) >= limit:
                break
        return chosen[:limit]

    async def search(self, item: DeskItem, limit: int) -> list[Offer]:
        """Up to `limit` offers for `item`, lowest price first."""
        return [self.to_offer(p) for p in self.match(item, limit)]
