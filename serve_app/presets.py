"""Presets (configs/presets/*.yaml): every model of the graph, its LoRAs, defaults and limits.

A preset names the models; how they are loaded and run on a device is its `tuning:`. Real model
ids are configuration, never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.errors import ConfigurationError
from serve_app.paths import CONFIGS_DIR


class GenerationDefaults(BaseModel):
    num_inference_steps: int = Field(default=50, description="Default diffusion steps.")
    guidance_scale: float = Field(default=7.5, description="Default guidance scale.")
    height: int = Field(default=1024, description="Default output height.")
    width: int = Field(default=1024, description="Default output width.")
    strength: float = Field(default=0.75, description="Default img2img strength.")


class GenerationLimits(BaseModel):
    max_steps: int = Field(default=150, description="Largest num_inference_steps accepted.")
    min_side: int = Field(default=64, description="Smallest height/width accepted.")
    max_side: int = Field(default=2048, description="Largest height/width accepted (always < 8192).")
    max_guidance_scale: float = Field(default=50.0, description="Largest guidance scale accepted.")
    max_prompt_chars: int = Field(default=2000, description="Longest prompt accepted.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, description="Largest image upload/fetch.")
    max_image_pixels: int = Field(default=4096 * 4096, description="Largest decoded image (w*h).")
    max_images: int = Field(default=8, ge=1, le=64, description="Largest `n` (images per request) accepted.")
    max_request_cost: int | None = Field(
        default=None,
        ge=1,
        description="Largest height x width x steps x images of one request: what one Generator replica can "
        "run without running out of memory or holding the queue for long. None: max_side^2 x max_steps.",
    )

    def request_cost_limit(self) -> int:
        return self.max_request_cost or self.max_side * self.max_side * self.max_steps


class LoraSpec(BaseModel):
    name: str = Field(description="Name clients pass as lora.name.")
    path: str = Field(description="Local file/folder, hub id, or tiny:<seed> (generated offline).")
    weight_name: str | None = Field(default=None, description="File inside a folder / hub repo.")
    trigger_words: list[str] = Field(default_factory=list, description="Added to the prompt.")
    default_scale: float = Field(default=1.0, description="Scale when the request gives none.")
    description: str = ""


class ModelSpec(BaseModel):
    model_id: str = Field(description="Hub id, local folder, or `tiny` (built offline from a config).")
    revision: str | None = None


class PipelineTuning(BaseModel):
    """How a diffusers pipeline is loaded and run: memory and speed options of a preset's model.

    Each is off (or automatic) by default, so a preset without `tuning:` runs the plain pipeline
    (the tiny preset sets only `trace_unet`); `benchmarks.gpu_throughput` reports what each one does on a GPU."""

    model_config = ConfigDict(extra="forbid")

    variant: str | None = Field(
        default=None,
        description="Weight files variant to download, e.g. fp16 (half the bytes of the fp32 files; "
        "the model repo must have them).",
    )
    vae: str | None = Field(
        default=None,
        description="Another AutoencoderKL to decode with (hub id or folder), e.g. "
        "madebyollin/sdxl-vae-fp16-fix: SDXL's own VAE overflows to NaN (black images) in float16.",
    )
    vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time (peak memory / batch).")
    vae_tiling: bool = Field(default=False, description="Decode large images in overlapping tiles (bounded memory).")
    safety_checker: bool = Field(
        default=True,
        description="Run the safety checker the weights ship with (SD 1.5); its verdict is a result field and a "
        "flagged image fails with CONTENT_FILTERED. false: not loaded (saves ~1.2 GB), results say not_run.",
    )
    channels_last: bool | None = Field(
        default=None, description="UNet in channels_last memory format; null: on CUDA only."
    )
    compile: Literal["off", "default", "max-autotune-no-cudagraphs"] = Field(
        default="off",
        description="torch.compile the UNet (a warm-up per batch shape on the first calls).",
    )
    compile_backend: str = Field(default="inductor", description="torch.compile backend.")
    trace_unet: bool = Field(
        default=False,
        description="CPU: run step-level batching's UNet calls through TorchScript graphs, one per input shape, "
        "traced on a background thread at replica start for the default size at each batch size (other shapes, "
        "and steps with a LoRA or tiling, run eagerly); 20% less time per step on the tiny UNet "
        "(serve_app/models/traced.py). Ignored on other devices: compile is their compiled path.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="Replay the compiled UNet as CUDA graphs (torch.compile mode reduce-overhead / max-autotune); "
        "needs compile and a CUDA device.",
    )
    fuse_lora: bool = Field(
        default=False,
        description="Merge the active LoRA into the base weights (no extra matmuls per step); a switch to "
        "another adapter unmerges first. For presets where one adapter dominates the traffic.",
    )

    @model_validator(mode="after")
    def _check(self) -> PipelineTuning:
        if self.cuda_graphs and self.compile == "off":
            raise ValueError("cuda_graphs needs compile (default or max-autotune-no-cudagraphs)")
        if self.cuda_graphs and self.compile_backend != "inductor":
            raise ValueError("cuda_graphs needs the inductor compile backend")
        if self.trace_unet and self.compile != "off":
            raise ValueError("trace_unet and compile both compile the UNet: choose one")
        return self

    def compile_mode(self) -> str | None:
        """torch.compile's mode, None when the UNet is not compiled."""
        if self.compile == "off":
            return None
        if self.cuda_graphs:
            return "max-autotune" if self.compile == "max-autotune-no-cudagraphs" else "reduce-overhead"
        return self.compile


class GeneratorModel(ModelSpec):
    family: Literal["sd", "sdxl"] = Field(default="sd", description="Pipeline family.")
    tuning: PipelineTuning = Field(default_factory=PipelineTuning)


class ClassifierModel(ModelSpec):
    desk_labels: list[str] = Field(
        default_factory=lambda: [
            "a photo of a desk setup",
            "a photo of a computer desk with a monitor and keyboard",
            "a photo of a home office workspace",
        ]
    )
    other_labels: list[str] = Field(
        default_factory=lambda: [
            "a photo of a landscape",
            "a photo of a person",
            "a photo of food",
            "a photo of an animal",
            "a photo of a street",
        ]
    )
    threshold: float = Field(default=0.5, description="is_desk when the desk labels' mass >= this.")


class TranslatorModel(ModelSpec):
    """The Korean -> English machine-translation model (MarianMT), `tiny` or a hub id/folder."""

    max_new_tokens: int = Field(default=128, ge=1, le=512, description="Longest translation, in tokens.")
    num_beams: int = Field(default=1, ge=1, le=8, description="Beam search width (1: greedy); never sampled.")


class Preset(BaseModel):
    name: str
    description: str = ""
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N | mps.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="auto: float16 on CUDA, float32 on CPU."
    )
    generator: GeneratorModel
    editor: GeneratorModel = Field(
        description="The instruction-edit model (InstructPix2Pix: an 8-channel UNet), `tiny` or a hub id/folder."
    )
    captioner: ModelSpec
    classifier: ClassifierModel
    translator: TranslatorModel = Field(
        description="Korean -> English for the prompt writer when the glossary does not know a word."
    )
    loras: list[LoraSpec] = Field(default_factory=list)
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    limits: GenerationLimits = Field(default_factory=GenerationLimits)
    max_loras_per_replica: int = Field(default=3, ge=1, description="LRU size of resident adapters.")

    @model_validator(mode="after")
    def _check(self) -> Preset:
        names = [lora.name for lora in self.loras]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate LoRA names in preset {self.name}: {names}")
        if self.limits.max_side >= 8192:
            raise ValueError("limits.max_side must be below 8192")
        d = self.defaults
        if not (d.height % 8 == 0 and d.width % 8 == 0):
            raise ValueError("default height/width must be multiples of 8")
        return self

    def lora(self, name: str) -> LoraSpec | None:
        return next((lora for lora in self.loras if lora.name == name), None)


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (configs/presets/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / "presets" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigurationError(f"Unknown preset {name_or_path!r} (no file {path}).")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Preset.model_validate(data)
