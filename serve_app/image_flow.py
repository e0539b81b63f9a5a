"""The plain image flow (task kind `image`): text-to-image, or an edit of the given image, n at once.

What the OpenAI-compatible routes (`/v1/images/generations`, `/v1/images/edits`) run: no caption,
no desk check, no shopping; the user's prompt with the LoRA's trigger words and the `images`
section of configs/prompts.yaml (its negatives). A task without its images fails
(GENERATION_FAILED); it never ends done without them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flow import CancelledFn, Flow, FlowOutcome, ProgressFn
from serve_app.prompts import BuiltPrompt, build_prompt, load_prompt_templates
from serve_app.requests import ResolvedGenerate
from serve_app.retry import StageUnavailableError
from serve_app.stages import GenerationOutput, StageRetry
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

logger = logging.getLogger(__name__)

KIND = "image"


class ImageFlow(Flow):
    async def _run(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        progress: ProgressFn,
        cancelled: CancelledFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> FlowOutcome:
        timings: dict[str, float] = {}
        stored: list[str] = []
        photo = await self.images.get(record.input_key) if record.input_key else None
        lora = request.lora
        built = build_prompt(
            "",
            [],
            await self._english(request.prompt, "prompt", result) or "",
            lora.trigger_words if lora else [],
            templates=load_prompt_templates(section="images"),
            user_negative=await self._english(request.negative_prompt, "negative_prompt", result),
        )
        result.update(
            prompt=built.prompt,
            negative_prompt=built.negative_prompt,
            lora={"name": lora.name, "scale": lora.scale} if lora else None,
        )
        await progress(Stage.generating)
        started = time.perf_counter()
        specs = request.generation_specs(built.prompt, built.negative_prompt, photo, task_id=record.task_id)
        try:
            outputs = await self._generate_all(specs, progress, journal)
        except (TaskCancelled, GenerationFailed):
            raise
        except (AppError, StageUnavailableError) as exc:
            message = exc.message if isinstance(exc, AppError) else str(exc)
            raise GenerationFailed(f"Image generation failed: {message}") from exc
        except Exception as exc:  # an unexpected model error: the replica ran the call and raised
            logger.exception("generation failed for task %s", record.task_id)
            raise GenerationFailed(f"Image generation failed: {type(exc).__name__}") from exc
        timings["generate"] = time.perf_counter() - started
        if await cancelled():
            raise TaskCancelled()

        await progress(Stage.storing)
        started = time.perf_counter()
        made = await self._store_images(
            request, outputs, lambda output: self._metadata(record, request, built, output, photo), stored
        )
        result.update(self._image_fields(request, made, outputs))
        timings["store"] = time.perf_counter() - started
        result["timings"] = {name: round(seconds, 4) for name, seconds in timings.items()}
        return FlowOutcome(result=result, object_keys=stored)

    @staticmethod
    def _metadata(
        record: TaskRecord, request: ResolvedGenerate, built: BuiltPrompt, output: GenerationOutput, photo: bytes | None
    ) -> dict[str, Any]:
        """The reproducibility record written beside each image."""
        return {
            "task_id": record.task_id,
            "kind": KIND,
            "prompt": built.prompt,
            "negative_prompt": built.negative_prompt,
            "seed": output.seed,
            "model_id": output.model_id,
            "lora": request.lora.model_dump(include={"name", "scale"}) if request.lora else None,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "strength": request.strength if photo is not None else None,
            "height": request.height,
            "width": request.width,
            "initial_image_url": record.initial_image_url,
            "mode": "img2img" if photo is not None else "txt2img",
            "output_format": request.output_format,
        }
