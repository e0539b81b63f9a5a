"""What the routes share inside one ingress replica (one replica = one process, so a module global),
and the dependencies routes declare, once each, as `Annotated` aliases (`Ctx`, `IdempotencyKey`)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple, TypeVar

from fastapi import Depends, Header
from pydantic import BaseModel
from ray.serve.handle import DeploymentHandle

from serve_app.api.budgets import PixelBudget
from serve_app.args import CoreArgs
from serve_app.errors import QueueFull
from serve_app.metrics import IngressMetrics
from serve_app.presets import GenerationLimits, Preset
from serve_app.settings import Settings
from serve_app.storage.base import ImageStore
from serve_app.tasks import TaskStore
from serve_app.tasks.notify import TaskChanges
from serve_app.webhook_secret import WebhookSecret

logger = logging.getLogger("ray.serve")


class UploadBudget:
    """Request-body bytes this ingress replica holds at once, across every submit being received.

    The per-request limit bounds one upload; this bounds them all together, so a burst of large
    uploads gets 503 + Retry-After instead of running the replica out of memory. One event loop
    per replica: no lock needed.
    """

    def __init__(self, total_bytes: int, retry_after_s: int) -> None:
        self.total = total_bytes
        self.used = 0
        self.retry_after_s = retry_after_s

    @contextmanager
    def hold(self) -> Iterator[Callable[[int], None]]:
        """A `take(n)` that reserves n more bytes for this request; all of them go back on exit."""
        held = 0

        def take(n: int) -> None:
            nonlocal held
            if self.used + n > self.total:
                raise QueueFull(
                    "This server is receiving as many uploads as it can hold; retry later.",
                    error_code="UPLOADS_BUSY",
                    retry_after_s=self.retry_after_s,
                )
            self.used += n
            held += n

        try:
            yield take
        finally:
            self.used -= held


class ProbeCache:
    """The last answer of a probe that costs something (the S3 storage probe writes an object),
    reused for `ttl_s`, so a caller that hammers /healthcheck makes no more probes than one every
    `ttl_s`; the checks that come while a probe runs wait for that one."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._answer: tuple[float, str] | None = None  # (when, what)
        self._running: asyncio.Future[str] | None = None

    async def get(self, probe: Callable[[], Awaitable[str]]) -> str:
        if self._answer is not None and self._clock() - self._answer[0] < self.ttl_s:
            return self._answer[1]
        running = self._running
        if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
            running = self._running = asyncio.ensure_future(self._run(probe))
        return await asyncio.shield(running)  # a check that gives up does not cancel the others' probe

    async def _run(self, probe: Callable[[], Awaitable[str]]) -> str:
        answer = await probe()
        self._answer = (self._clock(), answer)
        return answer


class DeploymentView(NamedTuple):
    """A deployment as the Serve controller reports it: its status and its replicas by state."""

    status: str  # HEALTHY, UPDATING, UPSCALING, DOWNSCALING, UNHEALTHY, ...
    replicas: dict[str, int]


ReplicaStates = dict[tuple[str, str], DeploymentView]


C = TypeVar("C", bound=BaseModel)


@dataclass
class IngressContext:
    args: CoreArgs
    preset: Preset
    limits: GenerationLimits
    settings: Settings
    tasks: TaskStore
    images: ImageStore
    runner: DeploymentHandle
    probes: dict[str, DeploymentHandle]
    # () -> (application, deployment) -> replicas per state, from the Serve controller (/healthcheck).
    replica_states: Callable[[], Awaitable[ReplicaStates]]
    metrics: IngressMetrics
    shopping_provider: str
    version: str
    changes: TaskChanges = field(default_factory=TaskChanges)  # pushed by the task store's listener
    # What signs webhooks (serve_app.webhook_secret.load_webhook_secret, which the ingress passes).
    webhook_secret: WebhookSecret | None = None
    webhooks: WebhookSecret = field(init=False)  # webhook_secret, or the environment's secret alone
    uploads: UploadBudget = field(init=False)
    pixels: PixelBudget = field(init=False)
    storage_probe: ProbeCache = field(init=False)  # /healthcheck's storage probe, cached
    _dispatches: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.webhooks = self.webhook_secret or WebhookSecret.configured(self.settings.imagegen_webhook_secret)
        admission, retry_after_s = self.args.admission, self.args.tasks.retry_after_s
        self.uploads = UploadBudget(admission.upload_bytes_in_flight, retry_after_s)
        self.pixels = PixelBudget(admission.decoded_pixels_in_flight, admission.decode_wait_s, retry_after_s)
        self.storage_probe = ProbeCache(self.args.health.storage_probe_ttl_s)

    def config(self, cls: type[C]) -> C:
        """A product's own section of the args (`scenes:`, `edits:` ...), by its model."""
        return self.args.product_config(cls)

    def dispatch(self, task_id: str) -> None:
        """Push a task to the runner without holding the client; the runner's sweeper is the backstop."""

        async def push() -> None:
            try:
                await self.runner.run.remote(task_id)
            except Exception as exc:  # runner full or restarting: the task stays queued and is swept
                logger.warning("dispatch of task %s failed (%s); the runner's sweeper will take it", task_id, exc)

        # In a context of its own: created in the request's, the push would be a child of the HTTP
        # request, and Serve cancels those when the request is cancelled (a waiting client that
        # disconnects), which took the task from the runner mid-run.
        task = asyncio.get_running_loop().create_task(push(), context=contextvars.Context())
        self._dispatches.add(task)
        task.add_done_callback(self._dispatches.discard)


_context: IngressContext | None = None


def set_context(ctx: IngressContext) -> None:
    global _context
    _context = ctx


def current_context() -> IngressContext | None:
    return _context


def get_ctx() -> IngressContext:
    if _context is None:
        raise RuntimeError("the ingress is not initialised")
    return _context


Ctx = Annotated[IngressContext, Depends(get_ctx)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
