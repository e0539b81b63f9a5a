"""Retrying calls to other deployments when the fault is the infrastructure's, not the request's.

A replica that died (kill -9, OOM, its node lost), one that is unreachable or still starting,
or a deployment with no replica right now: Serve restarts or replaces it, so the same call
on a healthy replica will work. These are retried with bounded exponential backoff; any other
error is the answer and is returned at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

from pydantic import BaseModel, Field

from serve_app.stages import StageRetry


class RetryConfig(BaseModel):
    """Calls to model deployments that fail because a replica or node died are retried like this."""

    max_attempts: int = Field(default=5, ge=1, le=20, description="Tries per stage call, the first included.")
    base_delay_s: float = Field(default=0.5, gt=0, description="Delay after the first failure; doubles each time.")
    max_delay_s: float = Field(default=8.0, gt=0, description="Longest delay between tries.")
    attempt_timeout_s: float = Field(
        default=600.0, gt=0, description="One try that takes longer (no replica can be placed) counts as failed."
    )


logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@functools.cache
def _infrastructure_types() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex
    from ray.serve import exceptions as sex

    return (
        rex.RayActorError,  # ActorDiedError, ActorUnavailableError
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.LocalRayletDiedError,
        rex.ObjectLostError,  # OwnerDiedError and friends: a result lost with its node
        rex.RpcError,
        rex.ActorUnschedulableError,
        sex.DeploymentUnavailableError,
        sex.ReplicaUnavailableError,
        sex.BackPressureError,  # every replica full right now: later, another may take it
        TimeoutError,  # one try ran past attempt_timeout_s (no replica could be placed)
    )


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when `exc` says a replica or node failed, not that the request itself was bad."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError) and not isinstance(exc, _infrastructure_types()):
        return False  # the replica ran the call and raised: its answer, not a fault
    return isinstance(exc, _infrastructure_types())


class StageUnavailableError(Exception):
    """A stage kept failing for infrastructure reasons through every try."""

    def __init__(self, stage: str, attempts: int, last: BaseException) -> None:
        self.stage = stage
        self.attempts = attempts
        self.last = last
        super().__init__(f"{stage} unavailable after {attempts} tries: {type(last).__name__}")


async def call_with_retries(
    stage: str,
    call: Callable[[], Awaitable[T]],
    policy: RetryConfig,
    journal: list[StageRetry],
    sleep: Sleep = asyncio.sleep,
) -> T:
    """`await call()`, retried on infrastructure errors with backoff; each retry is appended to
    `journal`. Other errors (and cancellation) pass through at once."""
    delay = policy.base_delay_s
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return await asyncio.wait_for(call(), timeout=policy.attempt_timeout_s)
        except Exception as exc:
            if not is_infrastructure_error(exc):
                raise
            journal.append(StageRetry(stage=stage, attempt=attempt, error=type(exc).__name__))
            if attempt == policy.max_attempts:
                raise StageUnavailableError(stage, attempt, exc) from exc
            logger.warning("%s failed on attempt %d (%s); retrying in %.1fs", stage, attempt, exc, delay)
            await sleep(delay)
            delay = min(delay * 2, policy.max_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
