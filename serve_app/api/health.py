"""GET /healthcheck (liveness + each deployment's readiness) and GET /info (what this server runs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_app.api.deps import Ctx, DeploymentView, IngressContext, ReplicaStates
from serve_app.api.schemas import HealthResponse
from serve_app.backends import BackendRegistry, BackendStatus
from serve_app.errors import AppError
from serve_app.products.registry import PRODUCTS
from serve_app.settings import Settings

logger = logging.getLogger("ray.serve")
router = APIRouter(tags=["health"])

TASK_ENDPOINTS = (
    "GET /v1/result/{task_id}",
    "DELETE /v1/tasks/{task_id}",
    "POST /v1/tasks/{task_id}/cancel",
    "GET /v1/tasks/{task_id}/events (Server-Sent Events)",
    "POST /v1/tasks/{task_id}/webhook (deliver a finished task's webhook again)",
)

PROBE_TIMEOUT_S = 5.0
SCALED_TO_ZERO = "ready (scaled to zero: the first request starts a replica)"


async def serve_replica_states() -> ReplicaStates:
    """Each deployment's replicas by state, as the Serve controller sees them.

    The controller runs every replica's `check_health` on its own schedule and replaces the ones
    that fail or die, so a RUNNING replica is one that passed it. Asking the controller instead of
    sending each deployment a request keeps /healthcheck quick and true under load: a request to a
    busy Generator waits behind its batches (`max_ongoing_requests`), and a readiness probe that
    times out there would take a working pod out of service exactly when it is busiest; and while
    a deployment has no replica yet the answer is an immediate 503, not a 5 s wait."""

    def read() -> ReplicaStates:
        from ray import serve

        status = serve.status()
        return {
            (app_name, name): DeploymentView(
                status=str(getattr(dep.status, "value", dep.status)),
                replicas={str(getattr(state, "value", state)): n for state, n in dep.replica_states.items()},
            )
            for app_name, app_status in status.applications.items()
            for name, dep in app_status.deployments.items()
        }

    return await asyncio.to_thread(read)


def readiness(handle: Any, states: ReplicaStates) -> str:
    """ "ready" when the handle's deployment has a RUNNING replica (or is autoscaled to zero and
    healthy: the first request starts one); else why not."""
    view = states.get((handle.app_name, handle.deployment_name))
    if view is None:
        return "not ready: not deployed"
    if view.replicas.get("RUNNING", 0) > 0:
        return "ready"
    replicas = {state: n for state, n in view.replicas.items() if n}
    waiting = ", ".join(f"{count} {state.lower()}" for state, count in sorted(replicas.items())) or "none"
    # Autoscaled to zero on purpose (min_replicas 0): HEALTHY with no replica, then UPSCALING while the
    # first request's replica starts. Requests queue for it meanwhile, so the app is not degraded.
    if not replicas and view.status == "HEALTHY":
        return SCALED_TO_ZERO
    if view.status == "UPSCALING" and set(replicas) <= {"STARTING"}:
        return f"ready (starting from zero: {waiting})"
    return f"not ready: no running replica (replicas: {waiting})"


async def _probe(name: str, call: Awaitable[Any]) -> str:
    """ "ready", or "not ready: " and an error code: /healthcheck is public, so what went wrong
    (an exception's text may name hosts, paths or a provider's answer) goes to the logs only."""
    try:
        await asyncio.wait_for(call, timeout=PROBE_TIMEOUT_S)
        return "ready"
    except TimeoutError:
        logger.warning("healthcheck: %s gave no answer within %.0f s", name, PROBE_TIMEOUT_S)
        return f"not ready: no answer within {PROBE_TIMEOUT_S:.0f}s"
    except Exception as exc:
        logger.warning("healthcheck: %s is not ready: %s: %s", name, type(exc).__name__, exc)
        code = exc.error_code if isinstance(exc, AppError) else f"{name.upper()}_UNAVAILABLE"
        return f"not ready: {code}"


async def _deployment_states(ctx: IngressContext) -> dict[str, str]:
    try:
        states = await asyncio.wait_for(ctx.replica_states(), timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        logger.warning("healthcheck: the Serve controller failed: %s: %s", type(exc).__name__, exc)
        reason = "no answer" if isinstance(exc, TimeoutError) else "an error"
        return dict.fromkeys(ctx.probes, f"not ready: the Serve controller gave {reason}")
    return {name: readiness(handle, states) for name, handle in ctx.probes.items()}


@router.get(
    "/healthcheck",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Some dependency is not ready."}},
    summary="200 when every deployment has a running replica and the task store and storage answer; 503 otherwise.",
)
async def healthcheck(ctx: Ctx) -> JSONResponse:
    # Writes nothing per call: the storage probe (S3's writes an object) is reused for
    # health.storage_probe_ttl_s, and the task store's is a read.
    results, storage_state, store_state = await asyncio.gather(
        _deployment_states(ctx),
        ctx.storage_probe.get(lambda: _probe("storage", ctx.images.check())),
        _probe("task_store", asyncio.to_thread(ctx.tasks.ping)),
    )
    healthy = all(state.startswith("ready") for state in [*results.values(), storage_state, store_state])
    body = HealthResponse(
        status="ok" if healthy else "degraded",
        deployments=results,
        storage="ok" if storage_state == "ready" else storage_state,
        task_store="ok" if store_state == "ready" else store_state,
    )
    return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())


def image_backend_statuses(ctx: IngressContext) -> list[BackendStatus]:
    """Each backend's status from config and the environment (no provider is called)."""
    registry = BackendRegistry(ctx.args.backends, ctx.preset.generator.model_id)
    return registry.statuses()


@router.get("/info", summary="Version, preset, model ids, defaults and limits, LoRAs, backends.")
async def info(ctx: Ctx) -> dict[str, Any]:
    preset = ctx.preset
    return {
        "version": ctx.version,
        "api_version": "v1",
        "preset": preset.name,
        "description": preset.description,
        "models": {
            "generator": {
                "model_id": preset.generator.model_id,
                "family": preset.generator.family,
                "tuning": preset.generator.tuning.model_dump(exclude_defaults=True),
            },
            "editor": {
                "model_id": preset.editor.model_id,
                "tuning": preset.editor.tuning.model_dump(exclude_defaults=True),
            },
            "captioner": {"model_id": preset.captioner.model_id},
            "desk_classifier": {
                "model_id": preset.classifier.model_id,
                "threshold": preset.classifier.threshold,
                "desk_labels": preset.classifier.desk_labels,
            },
            "translator": {"model_id": preset.translator.model_id, "num_beams": preset.translator.num_beams},
        },
        "device": preset.device,
        "dtype": preset.dtype,
        "defaults": preset.defaults.model_dump(),
        "limits": ctx.limits.model_dump(),
        "loras": [
            {
                "name": lora.name,
                "trigger_words": lora.trigger_words,
                "default_scale": lora.default_scale,
                "description": lora.description,
            }
            for lora in preset.loras
        ],
        "backends": {
            "storage": ctx.args.storage.kind,
            "task_store": ctx.tasks.kind,
            "shopping": ctx.shopping_provider,
            "shopping_fallback_to_catalog": ctx.args.shopping.fallback_to_catalog,
            "image_generation": "diffusers (in-cluster Generator deployment)",
            "webhooks": "enabled" if ctx.webhooks.enabled else "disabled",
            # Every image backend: configured (its key is set) and usable, its price and rate limit.
            "image": [status.model_dump() for status in image_backend_statuses(ctx)],
            "chains": ctx.args.backends.chains,
            "prompt_writer": {
                "provider": ctx.args.prompt_writer.provider,
                "model": ctx.args.prompt_writer.chat.model if ctx.args.prompt_writer.provider == "chat" else None,
                "fallback_to_template": ctx.args.prompt_writer.fallback_to_template,
                "machine_translation": ctx.args.prompt_writer.machine_translation,
            },
        },
        **{  # each product's own settings
            product.config.key: ctx.config(product.config.model).model_dump()
            for product in PRODUCTS
            if product.config is not None and product.config.in_info
        },
        "webhooks": ctx.webhooks.info(),  # on or off, where the secret lives; never the secret
        "environment": Settings.environment(),  # which variable each seed-named setting was read from; never a value
        "queue": {
            "max_active_tasks": ctx.args.tasks.max_active,
            "max_active_cost": ctx.args.admission.max_active_cost,
            "max_predicted_wait_s": ctx.args.admission.max_predicted_wait_s,
            "max_request_cost": ctx.limits.request_cost_limit(),
            "upload_bytes_in_flight": ctx.args.admission.upload_bytes_in_flight,
            "retry_after_s": ctx.args.tasks.retry_after_s,
        },
        "auth": {  # never a key: only whether keys are required and what a key may do by default
            "api_keys": "required" if ctx.args.auth.enabled else "off",
            "default_limits": ctx.args.auth.default_limits.model_dump() if ctx.args.auth.enabled else None,
        },
        "cors": {"enabled": ctx.args.cors.enabled, **ctx.args.cors.model_dump()},
        "openai_compatible": ctx.args.openai.model_dump(),
        "retention": {"ttl_s": ctx.args.retention.ttl_s, "sweep_interval_s": ctx.args.retention.sweep_interval_s},
        "retries": ctx.args.retries.model_dump(),
        "s3_input_prefixes": getattr(ctx.args.storage, "input_prefixes", None),
        "endpoints": [
            *(line for product in PRODUCTS for line in product.endpoints(ctx.args)),
            *TASK_ENDPOINTS,
            "GET / (web page)",
            "GET /healthcheck",
            "GET /info",
            "GET /files/{key} (local and google_drive storage)",
            "GET /docs",
        ],
    }
