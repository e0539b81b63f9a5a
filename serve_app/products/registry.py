"""The product registry: every product the app serves, one line each.

A product is a folder here (payload, route, flow, config, prompts) whose `product.py` exports
`PRODUCT` (`serve_app.products.base.Product`); listing it below is all it takes for the ingress to mount
its routes and document them, the runner to run its tasks, `/info` to show it and `AppArgs` to
take its config section. The order is the order of /info's endpoints.
"""

from importlib import import_module

from serve_app.products.base import Product

REGISTERED = (
    "desk",
    "images",
    "scenes",
    "articles",
    "edits",
    "textures",
    "compose",
)

PRODUCTS: tuple[Product, ...] = tuple(
    import_module(f"serve_app.products.{name}.product").PRODUCT for name in REGISTERED
)


def product(kind: str) -> Product:
    """The product whose tasks are of `kind`."""
    return next(p for p in PRODUCTS if p.kind == kind)
