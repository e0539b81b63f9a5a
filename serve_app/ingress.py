"""The FastAPI ingress deployment: parse, validate, hand off. Routes live in serve_app/api/."""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api import docs, events, files, health, page, tasks, webhooks
from serve_app.api.auth import AUTH_SCHEMES
from serve_app.api.budgets import tune_malloc
from serve_app.api.cors import ConfiguredCors
from serve_app.api.deps import IngressContext, current_context, set_context
from serve_app.api.errors import install_error_handlers
from serve_app.api.health import serve_replica_states
from serve_app.api.limits import JsonBodyLimit
from serve_app.api.slots import LongRequestSlots
from serve_app.args import CoreArgs
from serve_app.metrics import IngressMetrics
from serve_app.presets import GenerationLimits, Preset, load_preset
from serve_app.products.base import SchemaContext
from serve_app.products.registry import PRODUCTS
from serve_app.settings import get_settings
from serve_app.shopping.base import provider_name
from serve_app.storage import start_store
from serve_app.tasks import open_task_store
from serve_app.webhook_secret import load_webhook_secret

try:
    VERSION = version("imagegen-serve")
except PackageNotFoundError:  # running from a source tree without an install
    VERSION = "0.0.0+local"

app = FastAPI(
    title="imagegen-serve",
    version=VERSION,
    description="Desk makeover on Ray Serve: caption, desk check, SD + LoRA img2img, shopping offers.",
    docs_url=None,  # serve_app.api.docs: Swagger UI from the package's own files, not a CDN
)
for shared in (tasks, health, files, events, page, webhooks, docs):
    app.include_router(shared.router)
for product in PRODUCTS:
    for router in product.routers:
        app.include_router(router)
app.add_middleware(ConfiguredCors)  # CORS per the replica's `cors:` args; off until origins are listed
app.add_middleware(JsonBodyLimit)  # JSON bodies FastAPI parses are bounded (admission.max_json_body_bytes)
app.add_middleware(LongRequestSlots)  # outermost: caps on long requests, the body deadline (long_requests:)


def _count_rejection(status: int, error_code: str) -> None:
    ctx = current_context()
    if ctx is not None:
        ctx.metrics.rejected(status, error_code)


install_error_handlers(app, on_error=_count_rejection)


def _openapi() -> dict[str, Any]:
    """FastAPI's schema plus the models of bodies the routes parse themselves (each product's
    request schemas, with this server's preset and limits)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        ctx = current_context()
        if ctx is not None:
            doc = SchemaContext(
                preset=ctx.preset,
                limits=ctx.limits,
                webhooks=ctx.webhooks.enabled,
                s3_inputs=bool(getattr(ctx.args.storage, "input_prefixes", None)),
                args=ctx.args,
            )
        else:  # no running replica (tests, docs builds): the preset-independent schema
            doc = SchemaContext(preset=load_preset("tiny"), limits=GenerationLimits(), webhooks=True, s3_inputs=True)
        for product in PRODUCTS:
            components.update(product.schemas(doc))
        if ctx is not None and ctx.args.auth.enabled:  # documented only where it is required
            schema["components"]["securitySchemes"] = AUTH_SCHEMES
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(("/v1/", "/files/", "/api/v1/", "/generate", "/result/")):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in AUTH_SCHEMES]
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = _openapi  # type: ignore[method-assign]


@serve.deployment
@serve.ingress(app)
class Ingress:
    async def __init__(
        self, args: CoreArgs, preset: Preset, runner: DeploymentHandle, probes: dict[str, DeploymentHandle]
    ) -> None:
        parsed = args
        tune_malloc()  # image buffers go back to the OS when freed (serve_app.api.budgets)
        settings = get_settings()
        metrics = IngressMetrics()
        images = await start_store(parsed.storage, settings)
        images.on_error = metrics.storage_failed
        ctx = IngressContext(
            args=parsed,
            preset=preset,
            limits=parsed.effective_limits(preset),
            settings=settings,
            tasks=await asyncio.to_thread(open_task_store, parsed.tasks, settings),
            images=images,
            runner=runner,
            probes={"task_runner": runner, **probes},
            replica_states=serve_replica_states,
            metrics=metrics,
            shopping_provider=provider_name(parsed.shopping, settings),
            version=VERSION,
            webhook_secret=await asyncio.to_thread(load_webhook_secret, settings, parsed),
        )
        # The task store pushes every change of a task to this replica (waiting routes, events).
        self.listener = ctx.tasks.db.listener()
        await self.listener.start(ctx.changes.deliver)
        set_context(ctx)
