"""What a product is to the rest of the app: the `Product` each product's package exports as
`PRODUCT`, which the registry (`serve_app.products`) lists once. The ingress mounts its router and
documents its request schemas, the runner builds its flow, `/info` lists its endpoints and
config, and `AppArgs` takes its config section, all by iterating the registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel

from serve_app.args import CoreArgs
from serve_app.flows.kit import Flow, FlowDeps
from serve_app.presets import GenerationLimits, Preset

C = TypeVar("C", bound=BaseModel)
Schemas = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SchemaContext:
    """What a product's request schemas depend on: the running preset and its limits, whether
    webhooks and s3:// inputs are on, and the args (None when the document is built without a
    running replica: tests, docs builds)."""

    preset: Preset
    limits: GenerationLimits
    webhooks: bool
    s3_inputs: bool
    args: CoreArgs | None = None

    def config(self, cls: type[C]) -> C:
        """The product's own section, or its defaults without a replica."""
        return self.args.product_config(cls) if self.args is not None else cls()


@dataclass(frozen=True)
class ConfigSection:
    """A product's own section of serve_config.yaml's `args:` (e.g. `scenes:`)."""

    key: str
    model: type[BaseModel]
    in_info: bool = True  # /info shows it under `key`


@dataclass(frozen=True)
class Product:
    """One product: its task kind, route, flow, request schemas, config and backend chains."""

    kind: str  # the task kind its routes record and its flow runs
    router: APIRouter
    build_flow: Callable[[FlowDeps, CoreArgs], Flow[Any]]
    schemas: Callable[[SchemaContext], Schemas]
    endpoints: Callable[[CoreArgs | None], list[str]]  # /info's lines for its routes
    config: ConfigSection | None = None
    chains: tuple[str, ...] = ()  # the backends.chains it owns
    edit_chains: tuple[str, ...] = ()  # those of its chains whose backends must edit an image
    compose_chains: tuple[str, ...] = ()  # those of its chains whose backends must compose several images
    default_chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # when config names none (else local)
    # More routers, mounted beside `router` (the desk's seed paths). Not one router including the
    # others: an included router does not pickle, and the runner's class carries the registry.
    more_routers: tuple[APIRouter, ...] = ()

    @property
    def routers(self) -> tuple[APIRouter, ...]:
        return (self.router, *self.more_routers)
