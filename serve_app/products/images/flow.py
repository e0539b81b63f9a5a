"""Plain images (task kind `image`): text-to-image, or an edit of the given image, n at once.

What the OpenAI-compatible routes (`/v1/images/generations`, `/v1/images/edits`) run: no caption,
no desk check, no shopping; the user's prompt with the LoRA's trigger words and this product's
prompts.yaml (its negatives). A task without its images fails (GENERATION_FAILED); it never ends
done without them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel

from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flows.kit import Flow, FlowOutcome, Run, image_record, output_fields, prompt_fields
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.retry import StageUnavailableError
from serve_app.tasks.records import Stage

logger = logging.getLogger(__name__)

KIND = "image"
PROMPTS = Path(__file__).with_name("prompts.yaml")


class ImageFlow(Flow[BaseModel]):
    async def steps(self, run: Run[BaseModel]) -> FlowOutcome:
        request = run.request
        photo = await run.input_image()
        lora = request.lora
        built = build_prompt(
            "",
            [],
            await run.english(request.prompt, "prompt") or "",
            lora.trigger_words if lora else [],
            templates=load_prompt_templates(PROMPTS),
            user_negative=await run.english(request.negative_prompt, "negative_prompt"),
        )
        run.result.update(prompt_fields(built, lora))
        specs = request.generation_specs(built.prompt, built.negative_prompt, photo, task_id=run.record.task_id)
        async with run.stage(Stage.generating, "generate"):
            try:
                outputs = await run.generate_all(specs)
            except (TaskCancelled, GenerationFailed):
                raise
            except (AppError, StageUnavailableError) as exc:
                message = exc.message if isinstance(exc, AppError) else str(exc)
                raise GenerationFailed(f"Image generation failed: {message}") from exc
            except Exception as exc:  # an unexpected model error: the replica ran the call and raised
                logger.exception("generation failed for task %s", run.record.task_id)
                raise GenerationFailed(f"Image generation failed: {type(exc).__name__}") from exc

        async with run.stage(Stage.storing, "store"):
            made = [await run.store(output, image_record(run, output, photo, kind=KIND)) for output in outputs]
        run.result.update(run.image_fields(made), **output_fields(outputs))
        return run.outcome()
