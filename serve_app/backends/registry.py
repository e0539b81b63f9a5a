"""The cloud image backends: a provider is one module in `serve_app.backends.providers` whose class
is decorated with `@register_backend(name, edits=..., defaults=...)`; importing that package
registers them all. Everything that lists backends (config validation, /info, the chains, the
contract suites) reads `REGISTERED`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from serve_app.backends.provider import CloudBackendConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Registration:
    """A registered cloud backend: its client class, whether it can edit an image by an
    instruction (the edit chain), whether it can compose several images into one (the compose
    chain), and its default settings."""

    name: str
    cls: Callable[..., Any]
    edits: bool
    defaults: CloudBackendConfig
    composes: bool = False


REGISTERED: dict[str, Registration] = {}


def register_backend(
    name: str, *, defaults: CloudBackendConfig, edits: bool = False, composes: bool = False
) -> Callable[[T], T]:
    """Register a cloud backend class under `name` (its `backends.<name>:` config section and the
    name chains use)."""

    def register(cls: T) -> T:
        if name in REGISTERED:
            raise ValueError(f"image backend {name!r} is registered twice")
        setattr(cls, "name", name)  # noqa: B010 - the class's backend name is its registered one
        setattr(cls, "edits", edits)  # noqa: B010
        setattr(cls, "composes", composes)  # noqa: B010
        REGISTERED[name] = Registration(name=name, cls=cls, edits=edits, defaults=defaults, composes=composes)  # type: ignore[arg-type]
        return cls

    return register
