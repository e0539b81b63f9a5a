"""SD 1.5- and SDXL-base-shaped pipelines with random weights (real architecture configs, no download).

Same layers, shapes and FLOPs as the released models, so throughput and FLOP counts are those of
the real thing; the images are noise. Used by benchmarks/gpu_throughput.py, in-process and inside a
Serve replica (`PipelineServer`).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import serve

PROMPT = "a cozy wooden desk with a monitor, a keyboard and a plant, soft light, high quality"
NEGATIVE = "blurry, low quality, deformed"
CLIP_VOCAB = 49408  # the released text encoders' vocabulary (>= the tiny tokenizer's)

# What the two UNets' unet/config.json files share (defaults of UNet2DConditionModel left out).
_UNET_BOTH: dict[str, Any] = {
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}
# unet/config.json of stable-diffusion-v1-5.
SD15_UNET: dict[str, Any] = {
    **_UNET_BOTH,
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
# unet/config.json of stable-diffusion-xl-base-1.0.
SDXL_UNET: dict[str, Any] = {
    **_UNET_BOTH,
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
# vae/config.json (SD 1.5; SDXL's differs in sample_size, scaling_factor and force_upcast).
SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SDXL_VAE: dict[str, Any] = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
# CLIP ViT-L/14 text tower (SD 1.5's text_encoder, SDXL's text_encoder).
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# OpenCLIP ViT-bigG/14 text tower (SDXL's text_encoder_2, with projection).
CLIP_BIGG_TEXT: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}


@dataclass(frozen=True)
class Arch:
    """One pipeline shape and its benchmark defaults."""

    name: str
    family: str  # sd | sdxl
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    text_2: dict[str, Any] | None
    size: int
    steps: int
    notes: list[str] = field(default_factory=list)


# Tiny stand-ins with the same block types and conditioning (for checking the code paths on a CPU).
_TINY_TEXT: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}
_TINY_VAE: dict[str, Any] = {
    **SD_VAE,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "sample_size": 64,
}
_TINY_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "cross_attention_dim": 32,
}
_TINY_XL_UNET: dict[str, Any] = {
    **_TINY_UNET,
    "cross_attention_dim": 64,  # text + text_2 hidden states, concatenated
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,  # text_2 projection + 6 time ids x 8
}

ARCHS: dict[str, Arch] = {
    "sd15": Arch("sd15", "sd", SD15_UNET, SD_VAE, CLIP_L_TEXT, None, size=512, steps=30),
    "sdxl": Arch("sdxl", "sdxl", SDXL_UNET, SDXL_VAE, CLIP_L_TEXT, CLIP_BIGG_TEXT, size=1024, steps=20),
    "sd-tiny": Arch("sd-tiny", "sd", _TINY_UNET, _TINY_VAE, _TINY_TEXT, None, size=64, steps=4),
    "sdxl-tiny": Arch("sdxl-tiny", "sdxl", _TINY_XL_UNET, _TINY_VAE, _TINY_TEXT, _TINY_TEXT, size=64, steps=4),
}


def resolve_dtype(spec: str, device: str) -> torch.dtype:
    """auto: bfloat16 on CUDA, float32 elsewhere."""
    if spec == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec]


def _fill_random(module: torch.nn.Module, seed: int) -> None:
    """Cheap random init: slices of one seeded normal tensor, scaled 1/sqrt(fan_in); norms 1, biases 0.

    Much faster than the layers' own init on CPU (seconds instead of tens of seconds for a UNet), and
    keeps activations O(1). The repeated pattern does not matter for timing.
    """
    params = list(module.named_parameters())
    if not params:
        return
    largest = max(p.numel() for _, p in params)
    device = params[0][1].device
    generator = torch.Generator(device=device).manual_seed(seed)
    base = torch.randn(largest, generator=generator, device=device, dtype=torch.float32)
    with torch.no_grad():
        for name, param in params:
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:
                param.fill_(1.0)
            else:
                fan_in = param[0].numel()
                param.copy_(base[: param.numel()].view_as(param) / math.sqrt(fan_in))


def _materialize(module: torch.nn.Module, device: str, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A meta-built module allocated on `device` in `dtype` and filled with random weights."""
    module = module.to(dtype=dtype).to_empty(device=device)
    _fill_random(module, seed)
    for name, buffer in module.named_buffers():
        if name.endswith("position_ids"):  # CLIP's only buffer: arange(max_position_embeddings)
            buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
        else:
            raise RuntimeError(f"unexpected buffer {name}; cannot initialise it after to_empty")
    return module.eval().requires_grad_(False)


def build_components(
    arch: Arch, device: str | torch.device, token_ids: dict[str, int] | None = None
) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoder(s) of `arch` on `device` ("meta": shapes only, for FLOPs or to_empty)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ids = token_ids or {}
    with torch.device(device):
        parts: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel(**arch.unet),
            "vae": AutoencoderKL(**arch.vae),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**arch.text, **ids)),
        }
        if arch.text_2 is not None:
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_2, **ids))
    return parts


def _tokenizer() -> Any:
    """The project's offline CLIP tokenizer (model_max_length 77), trained into a temp folder."""
    from serve_app.models.tokenizer import build_tiny_clip_tokenizer

    with tempfile.TemporaryDirectory(prefix="igb-tok-") as folder:
        tokenizer = build_tiny_clip_tokenizer(Path(folder) / "tokenizer")
    tokenizer.model_max_length = 77
    if len(tokenizer) > CLIP_VOCAB:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens > text encoder vocab {CLIP_VOCAB}")
    return tokenizer


def build_pipeline(arch: Arch, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """A diffusers txt2img pipeline of `arch` with random weights on `device` in `dtype`."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    tokenizer = _tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,  # CLIP pools the hidden state at the EOS token
        "pad_token_id": tokenizer.pad_token_id,
    }
    meta = build_components(arch, "meta", ids)
    parts = {name: _materialize(module, device, dtype, seed + i) for i, (name, module) in enumerate(meta.items())}
    if arch.family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            scheduler=EulerDiscreteScheduler(**SCHEDULER, timestep_spacing="leading"),
            **parts,
        )
    else:
        pipe = StableDiffusionPipeline(
            tokenizer=tokenizer,
            scheduler=DDIMScheduler(**SCHEDULER, clip_sample=False, set_alpha_to_one=False),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **parts,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The preset tuning options the benchmark compares (serve_app.config.PipelineTuning), each on a
# freshly built pipeline; `lora` adds a random rank-LORA_RANK adapter to the UNet's attention
# projections, active at scale 1 (fused into the weights when the tuning says fuse_lora).
TUNINGS: dict[str, tuple[dict[str, Any], bool]] = {
    "default": ({}, False),  # the app's default: channels_last on CUDA, eager
    "no_channels_last": ({"channels_last": False}, False),
    "compile": ({"compile": "default"}, False),
    "compile_max_autotune": ({"compile": "max-autotune-no-cudagraphs"}, False),
    "cuda_graphs": ({"compile": "default", "cuda_graphs": True}, False),
    "vae_slicing": ({"vae_slicing": True}, False),
    "lora": ({}, True),
    "lora_fused": ({"fuse_lora": True}, True),
}
LORA_RANK = 64
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def tune_pipeline(pipe: Any, name: str, device: str) -> None:
    """Apply tuning `name` (TUNINGS) to a freshly built pipeline, as SDEngine applies a preset's."""
    from serve_app.models.tuning import apply_tuning
    from serve_app.presets import PipelineTuning

    options, with_lora = TUNINGS[name]
    tuning = PipelineTuning(**options)
    if with_lora:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer

        config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=LORA_TARGETS, init_lora_weights=False)
        pipe.unet.add_adapter(config, adapter_name="bench")
        pipe.unet.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
        if tuning.fuse_lora:  # what SDEngine's fuse_lora does: merge W + s*BA once
            for module in pipe.unet.modules():
                if isinstance(module, BaseTunerLayer):
                    module.merge(adapter_names=["bench"])
    apply_tuning(pipe, tuning, torch.device(device))


def count_flops(arch: Arch, height: int, width: int, guidance: float) -> dict[str, float]:
    """FLOPs per image on the meta device (no compute): UNet forward (x2 batch with CFG), VAE decode, text."""
    from torch.utils.flop_counter import FlopCounterMode

    parts = build_components(arch, "meta")
    cfg = 2 if guidance > 1.0 else 1
    scale = 2 ** (len(arch.vae["block_out_channels"]) - 1)  # the pipeline's vae_scale_factor (8 for SD)
    latent = (1, arch.unet["in_channels"], height // scale, width // scale)
    sample = torch.zeros((cfg, *latent[1:]), device="meta")
    timestep = torch.zeros((cfg,), device="meta")
    hidden = arch.unet["cross_attention_dim"]
    context = torch.zeros((cfg, 77, hidden), device="meta")
    kwargs: dict[str, Any] = {}
    if arch.family == "sdxl":
        pooled = torch.zeros((cfg, arch.text_2["projection_dim"] if arch.text_2 else 1280), device="meta")
        kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": torch.zeros((cfg, 6), device="meta")}
    tokens = torch.zeros((cfg, 77), dtype=torch.long, device="meta")
    counts: dict[str, float] = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            parts["unet"](sample, timestep, encoder_hidden_states=context, **kwargs)
        counts["unet_forward_cfg"] = float(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            parts["vae"].decode(torch.zeros(latent, device="meta"))
        counts["vae_decode"] = float(counter.get_total_flops())
        text = 0.0
        for name in ("text_encoder", "text_encoder_2"):
            if name in parts:
                with FlopCounterMode(display=False) as counter:
                    parts[name](tokens)
                text += float(counter.get_total_flops())
        counts["text_encoders"] = text
    return counts


def flops_per_image(counts: dict[str, float], steps: int) -> float:
    """UNet (CFG batch) x steps + VAE decode + text encoders (prompt and negative prompt)."""
    return counts["unet_forward_cfg"] * steps + counts["vae_decode"] + counts["text_encoders"]


def run_pipeline(pipe: Any, batch: int, size: int, steps: int, guidance: float, seed: int = 0) -> Any:
    """One pipeline call for `batch` images (decoded to tensors, no PIL)."""
    device = pipe.unet.device
    generator = torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(seed)
    return pipe(
        prompt=[PROMPT] * batch,
        negative_prompt=[NEGATIVE] * batch,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generator,
        output_type="pt",
    ).images


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@serve.deployment
class PipelineServer:
    """The same pipeline behind Serve: `@serve.batch`, max_batch_size from user_config."""

    def __init__(self, arch_name: str, device: str, dtype: str, run: dict[str, Any]) -> None:
        torch.set_num_threads(int(run.get("threads") or torch.get_num_threads()))
        if device == "cpu":
            torch.set_flush_denormal(True)
        self.device = device
        self.run = run
        self.pipe = build_pipeline(ARCHS[arch_name], device, resolve_dtype(dtype, device))
        tune_pipeline(self.pipe, run.get("tuning") or "default", device)
        self._lock = asyncio.Lock()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.generate_batch.set_max_batch_size(int(user_config.get("max_batch_size", 1)))
        self.generate_batch.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.05)))

    async def generate(self, seed: int) -> int:
        return await self.generate_batch(seed)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.05)
    async def generate_batch(self, seeds: list[int]) -> list[int]:
        """One pipeline call for the whole batch; returns the batch size to every caller."""
        async with self._lock:
            await asyncio.to_thread(self._call, len(seeds), seeds[0])
        return [len(seeds)] * len(seeds)

    def _call(self, batch: int, seed: int) -> None:
        r = self.run
        run_pipeline(self.pipe, batch, r["size"], r["steps"], r["guidance"], seed)
        synchronize(self.device)
