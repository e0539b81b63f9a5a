"""What every cloud image backend shares: its key from the environment, its `ProviderHTTP`, status,
timing and cost. A provider module subclasses `CloudBackend` and implements `_make`."""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from serve_app.backends.base import (
    BackendImage,
    BackendNotConfigured,
    BackendStatus,
    ComposeNotSupported,
    EditNotSupported,
    ImageBackend,
    OnStep,
    TilingNotSupported,
    ignored_fields,
    to_png,
)
from serve_app.backends.http import Clock, ProviderHTTP, Sleep
from serve_app.backends.provider import CloudBackendConfig, missing_keys
from serve_app.errors import AppError
from serve_app.net import FetchPolicy
from serve_app.settings import env_choice, spelled
from serve_app.stages import GenerationSpec


@dataclass
class Made:
    """What a provider call produced: the image bytes (any format Pillow reads) and the provider's ids."""

    data: bytes
    provider_request_id: str | None = None
    seed: int | None = None
    images_billed: int = 1


class CloudBackend(ImageBackend):
    """A provider reached over HTTP. Subclasses set `name`, `label`, `honoured` and implement `_make`
    (and `auth_headers` when the key does not travel as `Authorization: Bearer <key>`)."""

    kind = "cloud"
    label: str  # the provider's name in messages, e.g. "OpenAI"
    honoured: frozenset[str] = frozenset()  # GenerationSpec fields the provider honours (see ignored_fields)
    edits: bool = False  # whether `_make` can edit the spec's init image by its prompt (the edit chain)
    composes: bool = False  # whether `_make` takes the spec's reference images too (the compose chain)

    def __init__(
        self,
        cfg: CloudBackendConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        fetch: FetchPolicy | None = None,
    ) -> None:
        """`fetch`: how URLs the provider answers are fetched (its `allow_hosts` lets tests reach
        stubs on 127.0.0.1); the default refuses every private target."""
        self.cfg = cfg
        self._sleep = sleep
        self._clock = clock
        self.http = ProviderHTTP(
            self.label,
            cfg,
            headers=self.auth_headers,
            retry_hint=self.retry_hint,
            refusal=self.classify_refusal,
            clock=clock,
            sleep=sleep,
            transport=transport,
            fetch=fetch,
        )

    # -- keys --------------------------------------------------------------------------------------

    def _missing_keys(self) -> list[str]:
        """The key variables not set, each with the seeds' names for it (`$HF_TOKEN (or $HF_API_KEY, ...)`)."""
        return [spelled(name) for name in missing_keys(self.cfg)]

    def _key(self, name: str) -> str:
        """A key variable's value, read from the environment at each use (a rotated secret takes
        effect at once) by its name or one of the seeds' names for it (serve_app.settings.SEED_NAMES);
        BackendNotConfigured naming every missing variable when any is."""
        missing, found = self._missing_keys(), env_choice(name)
        if missing or found is None:
            raise BackendNotConfigured(
                f"The {self.label} image backend needs {' and '.join(missing)} set in the environment."
            )
        return found[1]

    @property
    def api_key(self) -> str:
        return self._key(self.cfg.api_key_env)

    @property
    def secret_key(self) -> str:
        return self._key(self.cfg.secret_key_env or "")

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def retry_hint(self, response: httpx.Response) -> float | None:
        """Seconds the provider asks to wait, beyond Retry-After (Hugging Face's estimated_time)."""
        return None

    def classify_refusal(self, response: httpx.Response) -> AppError | None:
        """A provider-specific meaning of an error answer (Gemini's invalid key is a 400, Stability's
        content moderation a 403), or None for the shared mapping."""
        return None

    # -- the interface -------------------------------------------------------------------------------

    def status(self) -> BackendStatus:
        missing = self._missing_keys()
        return BackendStatus(
            name=self.name,
            kind="cloud",
            model=self.cfg.model,
            configured=not missing,
            reason=f"{' and '.join(missing)} not set" if missing else None,
            price_usd_per_image=self.cfg.price_usd_per_image,
            rate_limit_per_minute=self.cfg.rate_limit_per_minute,
        )

    async def generate(self, spec: GenerationSpec, on_step: OnStep | None = None) -> BackendImage:
        self.api_key  # noqa: B018 - a clear configuration error before any request
        if spec.reference_images_png and not self.composes:
            raise ComposeNotSupported(f"The {self.label} backend cannot compose several images into one.")
        if spec.init_image_png is not None and not self.edits:
            raise EditNotSupported(f"The {self.label} backend cannot edit an image (it only makes new ones).")
        if spec.tileable:  # only the Generator pads circularly; a chain goes on to it
            raise TilingNotSupported(f"The {self.label} backend cannot make a seamless tile (tileable).")
        started = time.perf_counter()
        attempts_before = self.http.attempts
        made = await self._make(spec)
        png, _, _ = await asyncio.to_thread(to_png, made.data, self.label, self.cfg.max_image_pixels)
        return BackendImage(
            image_png=png,
            backend=self.name,
            model=self.cfg.model,
            seed=made.seed,
            seconds=round(time.perf_counter() - started, 4),
            cost_usd=round(self.cfg.price_usd_per_image * made.images_billed, 6),
            provider_request_id=made.provider_request_id,
            attempts=self.http.attempts - attempts_before,
            ignored=ignored_fields(spec, self.honours(spec)),
        )

    def honours(self, spec: GenerationSpec) -> set[str]:
        """The spec's fields this provider honours for this request (see ignored_fields)."""
        return set(self.honoured)

    async def aclose(self) -> None:
        await self.http.aclose()

    @abstractmethod
    async def _make(self, spec: GenerationSpec) -> Made:
        """Ask the provider for one image; raise AppErrors as serve_app.backends.base says."""


#: The aspect ratios most providers offer (Stability's list; Replicate's models take the same).
COMMON_ASPECT_RATIOS = {
    "21:9": 21 / 9,
    "16:9": 16 / 9,
    "3:2": 3 / 2,
    "5:4": 5 / 4,
    "1:1": 1.0,
    "4:5": 4 / 5,
    "2:3": 2 / 3,
    "9:16": 9 / 16,
    "9:21": 9 / 21,
}


def nearest_aspect_ratio(width: int, height: int, choices: Mapping[str, float]) -> str:
    """The provider's aspect ratio closest to width:height (on a log scale, so 2:1 and 1:2 are as far from 1:1)."""
    wanted = math.log(width / height)
    return min(choices, key=lambda name: abs(math.log(choices[name]) - wanted))
