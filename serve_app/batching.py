"""What every batched model deployment shares: its batching knobs (user_config, applied live in
`reconfigure`), its health check, and for the small models (Captioner, DeskClassifier, Translator)
holding the engine and calling it once per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from serve_app.errors import ConfigurationError

#: The small models' batching defaults; serve_config.yaml's user_config overrides them live.
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.02

In = TypeVar("In")
Out = TypeVar("Out")


def parse_batch_knobs(user_config: dict[str, Any]) -> tuple[int | None, float | None]:
    """(max_batch_size, batch_wait_timeout_s) from a user_config, validated; None when absent."""
    size = user_config.get("max_batch_size")
    wait = user_config.get("batch_wait_timeout_s")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigurationError(f"user_config.max_batch_size must be an integer >= 1, got {size!r}.")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0):
        raise ConfigurationError(f"user_config.batch_wait_timeout_s must be a number >= 0, got {wait!r}.")
    return size, (float(wait) if wait is not None else None)


class ModelReplica:
    """Mixed into a model deployment whose `@serve.batch` method is named by `batched`: applies
    max_batch_size and batch_wait_timeout_s live, and is unhealthy until its model is loaded."""

    batched: str  # the name of the deployment's @serve.batch method
    max_batch_size: int
    batch_wait_timeout_s: float

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: max_batch_size, batch_wait_timeout_s."""
        size, wait = parse_batch_knobs(user_config)
        method = getattr(self, self.batched)
        if size is not None:
            method.set_max_batch_size(size)
            self.max_batch_size = size
        if wait is not None:
            method.set_batch_wait_timeout_s(wait)
            self.batch_wait_timeout_s = wait

    def hold(self, engine: Any, model: str) -> None:
        """Keep the loaded `engine`, with the default batching knobs and `model`'s metrics."""
        from serve_app.metrics import ModelMetrics

        self.engine = engine
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.batch_wait_timeout_s = DEFAULT_BATCH_WAIT_TIMEOUT_S
        self.metrics = ModelMetrics(model)

    async def model_call(self, call: Callable[[list[In]], list[Out]], batch: list[In]) -> list[Out]:
        """One model call for a whole batch, on a worker thread, measured (size, seconds, failure)."""
        with self.metrics.batch_call(len(batch)):
            return await asyncio.to_thread(call, batch)

    async def check_health(self) -> None:
        """Serve calls this periodically; a replica without a loaded model is unhealthy."""
        if getattr(self, "engine", None) is None:
            raise RuntimeError(f"{type(self).__name__}: model not loaded")
