"""Image backends and their fallback chains (`backends:`), face restoration's provider."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import serve_app.backends.providers  # noqa: F401 - registers every cloud backend
from serve_app.backends.provider import CloudBackendConfig
from serve_app.backends.registry import REGISTERED


def backend_names() -> tuple[str, ...]:
    """Every backend a chain may name: the in-cluster Generator (local) and each registered one."""
    return ("local", *REGISTERED)


def edit_backends() -> tuple[str, ...]:
    """The backends that can edit a given image by an instruction (what an edit chain may name)."""
    return ("local", *(name for name, reg in REGISTERED.items() if reg.edits))


def compose_backends() -> tuple[str, ...]:
    """The backends that can compose several images into one (what a compose chain may name)."""
    return tuple(name for name, reg in REGISTERED.items() if reg.composes)


def chain_entry(entry: str) -> tuple[str, str | None]:
    """A chain entry `backend` or `backend:model` (a cloud backend with another model, e.g.
    `huggingface:black-forest-labs/FLUX.1-dev` for textures)."""
    name, _, model = entry.partition(":")
    return name, model or None


class Variant(BaseModel):
    """One arm of an A/B test: a share of callers whose images come from its own backend chain."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = Field(
        description="Recorded on results and metrics."
    )
    percent: Annotated[float, Field(gt=0, le=100)] = Field(description="Share of callers, in percent.")
    chain: list[str] = Field(min_length=1, description="Backends tried in order (entries as in backends.chains).")


class LocalBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_usd_per_gpu_second: float = Field(
        default=0.001, ge=0, description="Cost of the in-cluster Generator: GPU-seconds per image x this (~$3.6/h)."
    )


class BackendsConfig(BaseModel):
    """Every image backend, and the fallback chain each product tries in order.

    Defaults: the source specs' rate limits (Hugging Face about 10 a minute, DALL-E 3 five a minute) and
    the providers' list prices; the in-cluster Generator costs GPU-seconds x its price."""

    model_config = ConfigDict(extra="forbid")

    local: LocalBackendConfig = Field(default_factory=LocalBackendConfig)
    providers: dict[str, CloudBackendConfig] = Field(
        default_factory=lambda: {name: reg.defaults for name, reg in REGISTERED.items()},
        description="Each registered cloud backend's settings; in YAML each is its own section "
        "(backends.openai: ...), over the defaults its module registers.",
    )
    chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "scene_internal": ["local"],
            "scene_external": ["kling", "local"],
            "article": ["local", "huggingface"],
            # the texture seed's model first (the Generator without a token, and for seamless tiles)
            "texture": ["huggingface:black-forest-labs/FLUX.1-dev", "local"],
            "edit": ["local", "gemini", "openai:gpt-image-1"],
        },
        description="Product -> backends tried in order; the next one runs when the one before fails.",
    )
    experiments: dict[str, list[Variant]] = Field(
        default_factory=dict,
        description="A/B tests: product -> variants (name, percent, chain), percents summing to 100; a caller "
        "(API key, else user id) always lands in the same variant.",
    )

    @model_validator(mode="before")
    @classmethod
    def _provider_sections(cls, data: Any) -> Any:
        """`backends.<name>:` sections of the registered cloud backends, each over its defaults."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        providers = {name: dict(sections) for name, sections in (data.pop("providers", None) or {}).items()}
        for name in list(data):
            if name in REGISTERED:
                providers[name] = {**providers.get(name, {}), **data.pop(name)}
        data["providers"] = {
            name: {**reg.defaults.model_dump(exclude_unset=True), **providers.get(name, {})}
            for name, reg in REGISTERED.items()
        }
        unknown = sorted(set(providers) - set(REGISTERED))
        if unknown:
            raise ValueError(f"backends: unknown image backends {unknown} (known: {', '.join(REGISTERED)})")
        return data

    @model_validator(mode="after")
    def _chains_name_backends(self) -> BackendsConfig:
        """Every chain and A/B arm names known backends (which products there are, and which chains
        must edit, `serve_app.config.AppArgs` checks)."""
        for product, chain in self.chains.items():
            unknown = [
                entry
                for entry in chain
                if chain_entry(entry)[0] not in backend_names() or (entry.startswith("local:") and entry != "local")
            ]
            if unknown or not chain:
                raise ValueError(
                    f"backends.chains.{product}: {unknown or 'an empty chain'} (backends: {', '.join(backend_names())})"
                )
        for product, variants in self.experiments.items():
            if abs(sum(v.percent for v in variants) - 100) > 1e-6 or len({v.name for v in variants}) != len(variants):
                raise ValueError(
                    f"backends.experiments.{product}: variants need distinct names and percents summing to 100"
                )
            for variant in variants:
                bad = [e for e in variant.chain if chain_entry(e)[0] not in backend_names() or e.startswith("local:")]
                if bad:
                    raise ValueError(f"backends.experiments.{product}.{variant.name}: unknown backends {bad}")
        return self

    def variant_for(self, product: str, caller: str) -> Variant | None:
        """The caller's arm of the product's A/B test (None without one): a stable hash of the
        product and the caller into [0, 100), so the same caller always gets the same arm."""
        variants = self.experiments.get(product)
        if not variants:
            return None
        point = int.from_bytes(hashlib.sha256(f"{product}:{caller}".encode()).digest()[:8], "big") % 10_000 / 100
        edge = 0.0
        for variant in variants:
            edge += variant.percent
            if point < edge:
                return variant
        return variants[-1]

    def cloud(self, name: str) -> CloudBackendConfig:
        """A registered cloud backend's settings."""
        return self.providers[name]


class FaceRestorationConfig(BaseModel):
    """Face restoration after an edit: GFPGAN through Replicate (no local option: see
    serve_app.backends.restoration). Replicate's URL, key and retries come from backends.replicate (its section)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["replicate", "off"] = Field(default="replicate", description="off: requests for it are 422.")
    model: str = Field(
        default="tencentarc/gfpgan:0fbacf7afc6c144e5be9767cff80f25aff23e52b0708f17e20f9879b2f21516c",
        description="Replicate model:version taking `img`, `version`, `scale`.",
    )
    gfpgan_version: str = Field(default="v1.4", description="The model's `version` input (GFPGAN v1.3, v1.4...).")
    scale: float = Field(default=1.0, gt=0, le=4, description="Upscaling factor (1 keeps the edit's size).")
    price_usd_per_image: float = Field(default=0.0023, ge=0, description="What one restoration costs.")
