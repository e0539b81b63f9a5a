"""Image backends (SPEC.md section 2): the in-cluster Generator and the cloud providers, and the
per-product fallback chains of `backends.chains` in config.

`BackendRegistry` is built once per task-runner replica: the cloud clients (and their rate
limiters) are shared by every task the replica runs. The local backend is made per chain, over
the flow's retrying call to the Generator deployment.
"""

from __future__ import annotations

from serve_app.backends.base import BackendImage, BackendStatus, ImageBackend
from serve_app.backends.chain import BackendAttempt, BackendChain, ChainFailed, ChainResult
from serve_app.backends.config import BackendsConfig, chain_entry
from serve_app.backends.local import GenerateFn, LocalBackend
from serve_app.backends.registry import REGISTERED
from serve_app.net import FetchPolicy

__all__ = [
    "BackendAttempt",
    "BackendChain",
    "BackendImage",
    "BackendRegistry",
    "BackendStatus",
    "ChainFailed",
    "ChainResult",
    "ImageBackend",
    "LocalBackend",
    "variant_chain",
]


def cloud_backend(
    name: str, cfg: BackendsConfig, model: str | None = None, fetch: FetchPolicy | None = None
) -> ImageBackend:
    """A registered cloud backend's client, with its configured settings (and another model);
    `fetch` is how it fetches the image URLs its provider answers."""
    provider = cfg.cloud(name)
    if model:
        provider = provider.model_copy(update={"model": model})
    return REGISTERED[name].cls(provider, fetch=fetch)  # type: ignore[no-any-return]


class BackendRegistry:
    def __init__(
        self,
        cfg: BackendsConfig,
        local_model_id: str = "in-cluster",
        editor_model_id: str = "",
        fetch: FetchPolicy | None = None,
    ) -> None:
        self.cfg = cfg
        self.fetch = fetch  # the app's `fetch:` policy: provider image URLs are fetched as users' are
        self.local_model_id = local_model_id
        self.editor_model_id = editor_model_id or local_model_id  # the Editor's model: the edit chain's local
        self._cloud: dict[str, ImageBackend] = {}

    def cloud(self, entry: str) -> ImageBackend:
        """The client of a chain entry (`backend` or `backend:model`), made on first use (one per
        replica and entry: its rate limiter is shared by every task)."""
        if entry not in self._cloud:
            name, model = chain_entry(entry)
            self._cloud[entry] = cloud_backend(name, self.cfg, model, self.fetch)
        return self._cloud[entry]

    def models(self, product: str, entries: list[str] | None = None) -> list[str]:
        """The chain's backends and models, as a texture's content hash covers them."""
        out = []
        for entry in entries or self.cfg.chains[product]:
            name, model = chain_entry(entry)
            out.append(
                f"local@{self.local_model_id}" if name == "local" else f"{name}@{model or self.cfg.cloud(name).model}"
            )
        return out

    def chain(self, product: str, local_generate: GenerateFn, entries: list[str] | None = None) -> BackendChain:
        """The product's chain (or `entries`: an A/B variant's), its local backend calling the
        Generator through `local_generate`."""
        model_id = self.editor_model_id if product == "edit" else self.local_model_id
        local = LocalBackend(local_generate, self.cfg.local, model_id)
        names = entries or self.cfg.chains[product]
        return BackendChain(product, [local if name == "local" else self.cloud(name) for name in names])

    def statuses(self) -> list[BackendStatus]:
        local = LocalBackend(_unused, self.cfg.local, self.local_model_id).status()
        return [local, *(self.cloud(name).status() for name in REGISTERED)]

    async def aclose(self) -> None:
        for backend in self._cloud.values():
            await backend.aclose()


def variant_chain(payload: object) -> list[str] | None:
    """The backends of the A/B arm a product payload was assigned, or None for the product's chain."""
    variant = getattr(payload, "variant", None)
    return list(variant.chain) if variant is not None else None


async def _unused(*_: object) -> BackendImage:  # pragma: no cover - status() never generates
    raise AssertionError("status only")
