"""A product's fallback chain: try its backends in order until one makes the image.

Which errors move on to the next backend: every AppError a backend raises (not configured,
key rejected, rate limited past its retries, refused, failed), a Generator unreachable through
every retry, and a model error inside the Generator. Cancellation is never swallowed. Each
failed try is recorded, so a result says which backends were tried and why they did not make
the image."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from serve_app.backends.base import BackendImage, ImageBackend, OnStep
from serve_app.errors import AppError, TaskCancelled, UpstreamError
from serve_app.retry import StageUnavailableError
from serve_app.stages import GenerationSpec

logger = logging.getLogger(__name__)


class BackendAttempt(BaseModel):
    """A backend of the chain that did not make the image."""

    backend: str
    error_code: str
    message: str


class ChainFailed(UpstreamError):
    """Every backend of the chain failed; carries what each said."""

    default_code = "ALL_BACKENDS_FAILED"

    def __init__(self, product: str, attempts: list[BackendAttempt]) -> None:
        said = "; ".join(f"{a.backend}: {a.error_code}" for a in attempts)
        super().__init__(f"No backend of the {product} chain could make the image ({said}).")
        self.attempts = attempts


class ChainResult(BaseModel):
    image: BackendImage
    failed: list[BackendAttempt] = Field(default_factory=list, description="Backends tried before it.")


class BackendChain:
    def __init__(self, product: str, backends: list[ImageBackend]) -> None:
        if not backends:
            raise ValueError("a chain needs at least one backend")
        self.product = product
        self.backends = backends

    @property
    def names(self) -> list[str]:
        return [backend.name for backend in self.backends]

    async def generate(self, spec: GenerationSpec, on_step: OnStep | None = None) -> ChainResult:
        failed: list[BackendAttempt] = []
        for backend in self.backends:
            try:
                image = await backend.generate(spec, on_step)
            except TaskCancelled:
                raise
            except AppError as exc:
                failed.append(BackendAttempt(backend=backend.name, error_code=exc.error_code, message=exc.message))
            except StageUnavailableError as exc:
                failed.append(BackendAttempt(backend=backend.name, error_code="STAGE_UNAVAILABLE", message=str(exc)))
            except Exception as exc:  # a model error inside the Generator: its replica ran the call and raised
                logger.exception("%s: backend %s raised", self.product, backend.name)
                failed.append(
                    BackendAttempt(backend=backend.name, error_code="GENERATION_FAILED", message=type(exc).__name__)
                )
            else:
                return ChainResult(image=image, failed=failed)
            logger.warning("%s: backend %s failed (%s)", self.product, backend.name, failed[-1].error_code)
        raise ChainFailed(self.product, failed)
