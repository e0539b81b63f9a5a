"""Face restoration, the optional stage after an instruction edit (source spec enhancement-api-options.md:
InstructPix2Pix + GFPGAN).

Offered through a cloud backend only: GFPGAN on Replicate (`tencentarc/gfpgan`, inputs `img` as a
data URI, `version`, `scale`). A local restoration network cannot be installed cleanly here: the
`gfpgan`, `basicsr` and `facexlib` packages all require `torchvision`, which this project never
installs (and basicsr 1.4.2 imports `torchvision.transforms.functional_tensor`, gone from
torchvision since 0.17, so it fails at import even where torchvision is installed).
"""

from __future__ import annotations

import asyncio
import base64
import time
from abc import ABC, abstractmethod

from serve_app.backends.base import BackendImage, to_png
from serve_app.backends.config import BackendsConfig, FaceRestorationConfig
from serve_app.backends.providers.replicate import ReplicateBackend
from serve_app.net import FetchPolicy


class FaceRestorer(ABC):
    name: str

    @abstractmethod
    async def restore(self, image_png: bytes) -> BackendImage:
        """The image with its faces restored; raises an AppError (as image backends do) when it cannot."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ReplicateFaceRestorer(FaceRestorer):
    """GFPGAN (or any model taking the same inputs) run as a Replicate prediction."""

    name = "replicate"

    def __init__(self, client: ReplicateBackend, cfg: FaceRestorationConfig) -> None:
        self.client = client
        self.cfg = cfg

    async def restore(self, image_png: bytes) -> BackendImage:
        self.client.api_key  # noqa: B018 - a clear configuration error before any request
        started = time.perf_counter()
        attempts_before = self.client.http.attempts
        inputs = {
            "img": "data:image/png;base64," + base64.b64encode(image_png).decode("ascii"),
            "version": self.cfg.gfpgan_version,
            "scale": self.cfg.scale,
        }
        made = await self.client.predict(inputs)
        png, _, _ = await asyncio.to_thread(to_png, made.data, "Replicate", self.client.cfg.max_image_pixels)
        return BackendImage(
            image_png=png,
            backend=self.name,
            model=self.cfg.model,
            seconds=round(time.perf_counter() - started, 4),
            cost_usd=self.cfg.price_usd_per_image,
            provider_request_id=made.provider_request_id,
            attempts=self.client.http.attempts - attempts_before,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def build_restorer(
    cfg: FaceRestorationConfig, backends: BackendsConfig, fetch: FetchPolicy | None = None
) -> FaceRestorer | None:
    """The configured restorer (None when face restoration is off): Replicate's client settings
    (URL, key variable, retries, polling) with the restoration model; `fetch` bounds its download."""
    if cfg.provider == "off":
        return None
    client_cfg = backends.cloud("replicate").model_copy(update={"model": cfg.model, "options": {}})
    return ReplicateFaceRestorer(ReplicateBackend(client_cfg, fetch=fetch), cfg)
