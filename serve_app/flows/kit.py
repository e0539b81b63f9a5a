"""The flow kit: what every product's flow shares, so a flow is its own steps only.

`Flow.run` is what the task worker calls: it opens a `Run` for the task and calls the product's
`steps(run)`. The `Run` carries the task (its record, validated request and typed payload), the
result being built, the retry journal, the stage timings and every object stored; its
`stage(...)` context reports progress, checks for cancellation and times the stage:

    async with run.stage(Stage.generating, "generate"):
        outputs = await run.generate_all(specs)

An error a run ends with becomes a `FlowError` that keeps the partial result and the journal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from serve_app.backends import BackendChain, BackendImage, BackendRegistry, ChainFailed, ChainResult
from serve_app.backends.config import BackendsConfig
from serve_app.errors import AppError, GenerationFailed, ServiceUnavailable, TaskCancelled
from serve_app.outputs import encode_output
from serve_app.prompts import BuiltPrompt
from serve_app.requests import ResolvedGenerate
from serve_app.retry import RetryConfig, StageUnavailableError, call_with_retries
from serve_app.stages import (
    Classification,
    DeskItem,
    GeneratedImage,
    GenerationOutput,
    GenerationSpec,
    ItemSearchResult,
    StageRetry,
)
from serve_app.storage.base import ImageStore, make_key, sidecar_key
from serve_app.tasks.records import Stage, TaskRecord
from serve_app.writing import PromptWriter, TemplateWriter, Written
from serve_app.writing.glossary import has_hangul

OnStep = Callable[[int, int], Awaitable[None]]
CancelledFn = Callable[[], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]
P = TypeVar("P", bound=BaseModel)


class ProgressFn(Protocol):
    async def __call__(self, stage: Stage, step: int | None = None, total: int | None = None) -> None: ...


class Stages(Protocol):
    """The deployments a flow calls; each may raise an AppError or an infrastructure error."""

    async def caption(self, image_png: bytes) -> str: ...
    async def classify(self, image_png: bytes) -> Classification: ...
    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput: ...
    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]: ...


@dataclass
class FlowDeps:
    """What a runner replica gives every flow it builds (shared by all of that replica's tasks)."""

    stages: Stages
    images: ImageStore
    backends: BackendRegistry = field(default_factory=lambda: BackendRegistry(BackendsConfig()))
    writer: PromptWriter = field(default_factory=TemplateWriter)
    retries: RetryConfig = field(default_factory=RetryConfig)
    sleep: Sleep = asyncio.sleep
    task_store: Any = None  # the replica's TaskStore (the texture cache), when a flow needs it


@dataclass
class FlowOutcome:
    """What a finished run hands the worker: the result fields, and every object it stored
    (the retention sweep deletes them with the task)."""

    result: dict[str, Any]
    object_keys: list[str] = field(default_factory=list)


class FlowError(AppError):
    """Wraps the AppError a run ended with, keeping what the run had learned (retries, items)."""

    def __init__(self, cause: AppError, partial: dict[str, Any]) -> None:
        super().__init__(cause.message, error_code=cause.error_code)
        self.status_code = cause.status_code  # type: ignore[misc]
        self.partial = partial


@dataclass
class Run(Generic[P]):
    """One run of one task: its inputs, and everything the run has made so far."""

    deps: FlowDeps
    record: TaskRecord
    request: ResolvedGenerate
    payload: P
    progress: ProgressFn
    cancelled: CancelledFn
    result: dict[str, Any]
    journal: list[StageRetry] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _highest_step: int = 0

    # -- stages ------------------------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """TaskCancelled when the client has asked to cancel."""
        if await self.cancelled():
            raise TaskCancelled()

    @asynccontextmanager
    async def stage(self, stage: Stage | None, timing: str | None = None) -> AsyncIterator[None]:
        """A stage: stop here if the task was cancelled, report `stage` as its progress, and time
        the block as `timings[timing]` when it ends without an error."""
        await self.checkpoint()
        if stage is not None:
            await self.progress(stage)
        started = time.perf_counter()
        yield
        if timing is not None:
            self.timings[timing] = time.perf_counter() - started

    async def on_step(self, step: int, total: int) -> None:
        """A generation's step callback: each step reported once, however many images (or retries)
        report it, so progress never goes back."""
        if step > self._highest_step:
            self._highest_step = step
            await self.progress(Stage.generating, step, total)

    async def call(self, stage: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A stage call, retried on infrastructure faults; each retry goes in the journal."""
        return await call_with_retries(stage, call, self.deps.retries, self.journal, sleep=self.deps.sleep)

    def local_generate(self, spec: GenerationSpec, on_step: OnStep) -> Awaitable[GenerationOutput]:
        """The Generator (or the Editor, for an edit spec) as a backend's generate call, retried."""
        return self.call("generate", lambda: self.deps.stages.generate(spec, on_step))

    async def generate_all(self, specs: list[GenerationSpec]) -> list[GenerationOutput]:
        """Every image of a request at once through the Generator (so they share its batches);
        the first failure cancels the others and is raised."""
        calls = [asyncio.ensure_future(self.local_generate(spec, self.on_step)) for spec in specs]
        try:
            return list(await asyncio.gather(*calls))
        except BaseException:
            for call in calls:
                call.cancel()
            raise

    # -- backend chains -----------------------------------------------------------------------------

    def chain(self, name: str, entries: list[str] | None = None) -> BackendChain:
        """The backend chain `name` (or `entries`: an A/B arm's, or the request's own), its local
        backend the retried Generator."""
        return self.deps.backends.chain(name, self.local_generate, entries)

    async def generate_with(self, chain: BackendChain, spec: GenerationSpec) -> BackendImage:
        """One image through the chain; the result says which backend made it and which failed
        before it. Every backend failing is GENERATION_FAILED, each one's reason recorded."""
        try:
            made = await chain.generate(spec, self.on_step)
        except ChainFailed as exc:
            self.result["backends_failed"] = [attempt.model_dump() for attempt in exc.attempts]
            raise GenerationFailed(exc.message) from exc
        self.result.update(made.image.result_fields(), backends_failed=failed_fields(made) or None)
        return made.image

    async def generate_each(self, chain: BackendChain, specs: list[GenerationSpec]) -> list[ChainResult | AppError]:
        """Several images through the chain at once (the Generator batches them), each on its own:
        an image's ChainResult, or the error it alone ended with."""
        outcomes = await asyncio.gather(*(chain.generate(spec, self.on_step) for spec in specs), return_exceptions=True)
        if any(isinstance(outcome, TaskCancelled) for outcome in outcomes):
            raise TaskCancelled()
        return [
            outcome if isinstance(outcome, ChainResult | AppError) else _unexpected(outcome) for outcome in outcomes
        ]

    # -- words -----------------------------------------------------------------------------------

    async def english(self, text: str | None, field_name: str) -> str | None:
        """`text` in English for the SD text encoder (CLIP reads English only): Korean goes through
        the prompt writer, and the result records what was translated, by whom, and any word the
        offline writer had to drop."""
        if not text or not has_hangul(text):
            return text
        written = await self.deps.writer.translate(text)
        self.result.setdefault("translations", {})[field_name] = {
            "source": text,
            "english": written.text,
            **written.record(),
        }
        self.time_translation(written)
        return written.text

    def time_translation(self, written: Written) -> None:
        """The Translator's seconds for `written`, added to `timings.translate`."""
        if written.machine_translated:
            self.timings["translate"] = self.timings.get("translate", 0.0) + written.translate_s

    # -- storing ---------------------------------------------------------------------------------

    async def input_image(self) -> bytes | None:
        """The task's input photo (uploaded or fetched at the edge), if it has one."""
        return await self.deps.images.get(self.record.input_key) if self.record.input_key else None

    async def more_input_images(self) -> list[bytes]:
        """The task's input images after its photo (stored at intake, in the order given)."""
        return [await self.deps.images.get(key) for key in self.request.more_input_keys]

    async def store(self, image: GenerationOutput | BackendImage, metadata: dict[str, Any]) -> GeneratedImage:
        """Encode an image as the request asks and store it with its reproducibility record; both
        keys are kept for the retention sweep."""
        request = self.request
        data, ext, media_type = await asyncio.to_thread(
            encode_output, image.image_png, request.output_format, request.output_compression
        )
        key = make_key(request.user_id, ext=ext)
        self.stored.extend([key, sidecar_key(key)])
        url = await self.deps.images.put(key, data, content_type=media_type, metadata=metadata)
        return GeneratedImage(url=url, key=key, seed=image.seed)

    def image_fields(self, made: list[GeneratedImage]) -> dict[str, Any]:
        """The result fields every product with images shares."""
        return {
            "processed_image_url": made[0].url,
            "images": [image.model_dump() for image in made],
            "output_format": self.request.output_format,
        }

    def settings_record(self) -> dict[str, Any]:
        """The request's generation settings, as every reproducibility record states them."""
        request = self.request
        return {
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "height": request.height,
            "width": request.width,
            "output_format": request.output_format,
        }

    def record_timings(self) -> None:
        """The stage timings so far, in the result (seconds per stage)."""
        if self.timings:
            self.result["timings"] = {name: round(seconds, 4) for name, seconds in self.timings.items()}

    def outcome(self) -> FlowOutcome:
        """The run's result (with its stage timings) and the objects it stored."""
        self.record_timings()
        return FlowOutcome(result=self.result, object_keys=[*self.request.more_input_keys, *self.stored])


class Flow(Generic[P]):
    """A product's flow: `steps(run)` are its own; running, errors and the journal are the kit's.

    `payload` is the product's payload model: the task's `request.product`, read back typed."""

    payload: type[P] | None = None

    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps

    async def run(self, record: TaskRecord, progress: ProgressFn, cancelled: CancelledFn) -> FlowOutcome:
        """Run one task; returns its outcome or raises FlowError (an AppError with the partial result)."""
        request = ResolvedGenerate.model_validate(record.request)
        payload = self.payload.model_validate(request.product) if self.payload is not None else None
        run: Run[P] = Run(self.deps, record, request, payload, progress, cancelled, {"seed": request.seed})  # type: ignore[arg-type]
        error: AppError | None = None
        try:
            outcome = await self.steps(run)
        except AppError as exc:
            error = exc
        except StageUnavailableError as exc:
            error = ServiceUnavailable(f"{exc}.", error_code="STAGE_UNAVAILABLE")
        if run.journal:
            run.result["retries"] = [entry.model_dump() for entry in run.journal]
        if error is not None:
            raise FlowError(error, run.result) from error
        return outcome

    async def steps(self, run: Run[P]) -> FlowOutcome:
        """The product's own steps; return `run.outcome()`."""
        raise NotImplementedError


def prompt_fields(built: BuiltPrompt, lora: Any) -> dict[str, Any]:
    """The result fields saying what the Generator was asked: the final prompts and the LoRA."""
    return {
        "prompt": built.prompt,
        "negative_prompt": built.negative_prompt,
        "lora": {"name": lora.name, "scale": lora.scale} if lora else None,
    }


def image_record(run: Run[Any], output: GenerationOutput, photo: bytes | None, kind: str | None) -> dict[str, Any]:
    """The reproducibility record of an image the Generator made from the request's prompt."""
    request, result = run.request, run.result
    record = {
        "task_id": run.record.task_id,
        **({"kind": kind} if kind else {}),
        "prompt": result["prompt"],
        "negative_prompt": result["negative_prompt"],
        "seed": output.seed,
        "model_id": output.model_id,
        "lora": result["lora"],
        **run.settings_record(),
        "strength": request.strength if photo is not None else None,
        "initial_image_url": run.record.initial_image_url,
        "mode": "img2img" if photo is not None else "txt2img",
    }
    return record


def output_fields(outputs: list[GenerationOutput]) -> dict[str, Any]:
    """What a result says of the Generator's images: the model, and the safety checker's verdict
    (passed: the weights' checker saw every image; not_run: there is none. A flagged image never
    gets here: its task fails CONTENT_FILTERED)."""
    return {
        "model_id": outputs[0].model_id,
        "safety_checker": "passed" if all(o.safety == "passed" for o in outputs) else "not_run",
    }


def failed_fields(made: ChainResult) -> list[dict[str, Any]]:
    """The backends a chain tried before the one that made the image."""
    return [attempt.model_dump() for attempt in made.failed]


def item_error(error: AppError) -> dict[str, Any]:
    """The fields of one item (placeholder, texture) that got no image, and why."""
    if isinstance(error, ChainFailed):
        return {
            "error_code": "GENERATION_FAILED",
            "message": error.message,
            "backends_failed": [attempt.model_dump() for attempt in error.attempts],
        }
    return {"error_code": error.error_code, "message": error.message}


def _unexpected(exc: BaseException) -> AppError:
    if isinstance(exc, Exception):
        return GenerationFailed(type(exc).__name__)
    raise exc  # KeyboardInterrupt and the like are not an item's failure
