"""Serve side of serve_overhead: the bare server's routes behind Serve, as a "default" and a "tuned" app.

Both apps have an ingress (FastAPI) with `/noop` (ingress only), `/hop` (ingress -> 1 deployment),
`/model` (ingress -> the tiny MLP) and `/chain` (ingress -> A -> B -> C -> D).

- default: what a first version looks like: Serve's defaults (max_ongoing_requests=5, access
  logs on) and a nested chain where each stage awaits the next one.
- tuned: max_ongoing_requests=64, access logs off, and the chain composed by the ingress, which
  passes each stage's DeploymentResponse unawaited to the next (Serve resolves it replica-side,
  the ingress awaits only the last one).

Both reuse the handles bound at construction (a handle per request would rebuild routing state).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from benchmarks._tiny_model import TinyModelRunner

Variant = Literal["default", "tuned"]
STAGES = ("A", "B", "C", "D")
LIGHT_CPUS = 0.05  # fractional CPUs: 12 replicas must fit a 2-core box


@serve.deployment
class Stage:
    """One no-op stage of the chain; `next_stage` is the following stage (None for the last)."""

    def __init__(self, next_stage: DeploymentHandle | None = None) -> None:
        self.next_stage = next_stage

    async def noop(self) -> int:
        return 0

    async def step(self, x: int) -> int:
        return x + 1

    async def nested(self, x: int) -> int:
        if self.next_stage is None:
            return x + 1
        return await self.next_stage.nested.remote(x + 1)


@serve.deployment
class Model:
    """The tiny MLP; a sync method, so Serve runs it in its thread pool (as FastAPI does a `def` route)."""

    def __init__(self) -> None:
        self.runner = TinyModelRunner()

    def __call__(self) -> float:
        return self.runner()


default_api = FastAPI()
tuned_api = FastAPI()


class _IngressBase:
    def __init__(self, stages: list[DeploymentHandle], model: DeploymentHandle) -> None:
        self.stages = stages
        self.model = model

    async def _noop(self) -> dict[str, Any]:
        return {"result": 0}

    async def _hop(self) -> dict[str, Any]:
        return {"result": await self.stages[0].noop.remote()}

    async def _model(self) -> dict[str, Any]:
        return {"result": await self.model.remote()}


@serve.deployment
@serve.ingress(default_api)
class DefaultIngress(_IngressBase):
    @default_api.get("/noop")
    async def noop(self) -> dict[str, Any]:
        return await self._noop()

    @default_api.get("/hop")
    async def hop(self) -> dict[str, Any]:
        return await self._hop()

    @default_api.get("/model")
    async def model_call(self) -> dict[str, Any]:
        return await self._model()

    @default_api.get("/chain")
    async def chain(self) -> dict[str, Any]:
        # Nested: A awaits B awaits C awaits D; every hop holds a slot in its caller while it waits.
        return {"result": await self.stages[0].nested.remote(0)}


@serve.deployment
@serve.ingress(tuned_api)
class TunedIngress(_IngressBase):
    @tuned_api.get("/noop")
    async def noop(self) -> dict[str, Any]:
        return await self._noop()

    @tuned_api.get("/hop")
    async def hop(self) -> dict[str, Any]:
        return await self._hop()

    @tuned_api.get("/model")
    async def model_call(self) -> dict[str, Any]:
        return await self._model()

    @tuned_api.get("/chain")
    async def chain(self) -> dict[str, Any]:
        # Composed: DeploymentResponses passed unawaited; only the last one is awaited here.
        response = self.stages[0].step.remote(0)
        for stage in self.stages[1:]:
            response = stage.step.remote(response)
        return {"result": await response}


def deployment_options(variant: Variant, max_ongoing_requests: int = 64) -> dict[str, Any]:
    """Per-deployment options of a variant (the default variant leaves Serve's defaults)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": LIGHT_CPUS},
        "graceful_shutdown_wait_loop_s": 0.1,
        "graceful_shutdown_timeout_s": 1,
    }
    if variant == "tuned":
        options["max_ongoing_requests"] = max_ongoing_requests
        options["logging_config"] = {"enable_access_log": False, "log_level": "WARNING"}
    else:
        options["logging_config"] = {"enable_access_log": True, "log_level": "INFO"}
    return options


def build_app(variant: Variant, max_ongoing_requests: int = 64) -> Application:
    """The ingress, the 4 stages and the model of one variant."""
    options = deployment_options(variant, max_ongoing_requests)
    handles: list[Any] = []
    next_stage: Any = None
    for name in reversed(STAGES):
        next_stage = Stage.options(name=name, **options).bind(next_stage)
        handles.insert(0, next_stage)
    model = Model.options(**options).bind()
    ingress = DefaultIngress if variant == "default" else TunedIngress
    return ingress.options(**options).bind(handles, model)
