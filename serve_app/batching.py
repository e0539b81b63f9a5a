"""Batching knobs shared by the batched deployments (user_config, applied live in reconfigure)."""

from __future__ import annotations

from typing import Any

from serve_app.errors import ConfigurationError


def parse_batch_knobs(user_config: dict[str, Any]) -> tuple[int | None, float | None]:
    """(max_batch_size, batch_wait_timeout_s) from a user_config, validated; None when absent."""
    size = user_config.get("max_batch_size")
    wait = user_config.get("batch_wait_timeout_s")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigurationError(f"user_config.max_batch_size must be an integer >= 1, got {size!r}.")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0):
        raise ConfigurationError(f"user_config.batch_wait_timeout_s must be a number >= 0, got {wait!r}.")
    return size, (float(wait) if wait is not None else None)
