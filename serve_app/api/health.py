"""GET /healthcheck (liveness + each deployment's readiness) and GET /info (what this server runs)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serve_app.api.deps import IngressContext, get_ctx
from serve_app.backends import BackendRegistry, BackendStatus
from serve_app.protocol import HealthResponse

router = APIRouter(tags=["health"])

PROBE_TIMEOUT_S = 5.0


async def _probe(name: str, call: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(call, timeout=PROBE_TIMEOUT_S)
        return name, "ready"
    except TimeoutError:
        return name, f"not ready: no answer within {PROBE_TIMEOUT_S:.0f}s"
    except Exception as exc:
        return name, f"not ready: {type(exc).__name__}: {exc}"[:300]


@router.get(
    "/healthcheck",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Some dependency is not ready."}},
    summary="200 when every deployment, the task store and storage are ready; 503 otherwise.",
)
async def healthcheck(ctx: IngressContext = Depends(get_ctx)) -> JSONResponse:
    async def storage() -> None:
        await ctx.images.check()

    probes = [_probe(name, handle.check_health.remote()) for name, handle in ctx.probes.items()]
    probes += [_probe("storage", storage()), _probe("task_store", asyncio.to_thread(ctx.tasks.ping))]
    results = dict(await asyncio.gather(*probes))
    storage_state = results.pop("storage")
    store_state = results.pop("task_store")
    healthy = all(state == "ready" for state in [*results.values(), storage_state, store_state])
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
async def info(ctx: IngressContext = Depends(get_ctx)) -> dict[str, Any]:
    preset = ctx.preset
    return {
        "version": ctx.version,
        "api_version": "v1",
        "preset": preset.name,
        "description": preset.description,
        "models": {
            "generator": {"model_id": preset.generator.model_id, "family": preset.generator.family},
            "captioner": {"model_id": preset.captioner.model_id},
            "desk_classifier": {
                "model_id": preset.classifier.model_id,
                "threshold": preset.classifier.threshold,
                "desk_labels": preset.classifier.desk_labels,
            },
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
            "webhooks": "enabled" if ctx.settings.imagegen_webhook_secret else "disabled",
            # Every image backend: configured (its key is set) and usable, its price and rate limit.
            "image": [status.model_dump() for status in image_backend_statuses(ctx)],
            "chains": ctx.args.backends.chains,
            "prompt_writer": {
                "provider": ctx.args.prompt_writer.provider,
                "model": ctx.args.prompt_writer.chat.model if ctx.args.prompt_writer.provider == "chat" else None,
                "fallback_to_template": ctx.args.prompt_writer.fallback_to_template,
            },
        },
        "scenes": ctx.args.scenes.model_dump(),
        "articles": ctx.args.articles.model_dump(),
        "textures": ctx.args.textures.model_dump(),
        "queue": {
            "max_active_tasks": ctx.args.tasks.max_active,
            "max_active_cost": ctx.args.admission.max_active_cost,
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
            "POST /v1/generate",
            "GET /v1/result/{task_id}",
            "DELETE /v1/tasks/{task_id}",
            "POST /v1/tasks/{task_id}/cancel",
            "GET /v1/tasks/{task_id}/events (Server-Sent Events)",
            "POST /v1/tasks/{task_id}/webhook (deliver a finished task's webhook again)",
            *(
                ["POST /v1/images/generations (OpenAI-compatible)", "POST /v1/images/edits (OpenAI-compatible)"]
                if ctx.args.openai.enabled
                else []
            ),
            "POST /api/v1/images/generations/external (scene image, cloud chain)",
            "POST /api/v1/images/generations/internal (scene image, in-cluster Generator)",
            "POST /v1/articles/images (one image per article placeholder)",
            "POST /v1/edits (instruction edit of an uploaded image: InstructPix2Pix or a cloud edit API)",
            "POST /v1/textures (fabric textures; a content-addressed cache; seamless tiling)",
            "GET / (web page)",
            "GET /healthcheck",
            "GET /info",
            "GET /files/{key} (local storage)",
            "GET /docs",
        ],
    }
