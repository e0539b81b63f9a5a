"""`AppArgs`: the `args:` of serve_config.yaml, passed to `serve_app.builder:build_app`.

The sections the whole app shares are `serve_app.args.CoreArgs`; each registered product adds its
own (`scenes:`, `articles:`, ...), so a new product's settings need no line here. The checks that
join the two (a backend chain names a product's chain; an edit chain can edit) are here too.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, create_model, model_validator

from serve_app.args import CoreArgs
from serve_app.backends.config import chain_entry, compose_backends, edit_backends
from serve_app.products.registry import PRODUCTS

CHAINS = tuple(chain for product in PRODUCTS for chain in product.chains)
DEFAULT_CHAINS = {chain: list(entries) for product in PRODUCTS for chain, entries in product.default_chains.items()}
#: The chains whose every backend must be able to do something: (chains, the backends that can, what).
CAPABLE_CHAINS = (
    (tuple(chain for product in PRODUCTS for chain in product.edit_chains), edit_backends, "edit an image"),
    (
        tuple(chain for product in PRODUCTS for chain in product.compose_chains),
        compose_backends,
        "compose several images into one",
    ),
)


class _ProductArgs(CoreArgs):
    @model_validator(mode="after")
    def _chains_are_products(self) -> Self:
        """Every backends.chains / backends.experiments entry names a product's chain, every
        product's chain exists (its product's default, else the local Generator), and an edit
        (compose) chain's backends can edit (compose)."""
        backends = self.backends
        for section, named in (("chains", backends.chains), ("experiments", backends.experiments)):
            for product in named:
                if product not in CHAINS:
                    raise ValueError(f"backends.{section}: unknown product {product!r} (known: {', '.join(CHAINS)})")
        for chain in CHAINS:
            backends.chains.setdefault(chain, list(DEFAULT_CHAINS.get(chain, ["local"])))
        for products, capable, what in CAPABLE_CHAINS:
            able = capable()
            for product in products:
                chains = [(f"backends.chains.{product}", backends.chains[product])] + [
                    (f"backends.experiments.{product}.{v.name}", v.chain) for v in backends.experiments.get(product, [])
                ]
                for where, chain in chains:
                    cannot = [entry for entry in chain if chain_entry(entry)[0] not in able]
                    if cannot:
                        raise ValueError(f"{where}: {cannot} cannot {what} (backends that can: {', '.join(able)})")
        return self


def _product_sections() -> dict[str, Any]:
    return {
        product.config.key: (
            product.config.model,
            Field(default_factory=product.config.model, description=f"The {product.kind} product's settings."),
        )
        for product in PRODUCTS
        if product.config is not None
    }


AppArgs = create_model(  # type: ignore[call-overload]
    "AppArgs",
    __base__=_ProductArgs,
    __module__=__name__,
    __doc__="The `args:` of serve_config.yaml: the shared sections and each registered product's own.",
    **_product_sections(),
)
