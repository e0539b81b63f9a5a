"""Tiny Stable Diffusion pipeline and tiny LoRA adapters built offline from configs (fixed seeds).

The `tiny` preset uses them so generation runs on a laptop with no download, through the same
`from_pretrained` / `load_lora_weights` code paths that real hub ids take. Builds are idempotent
and safe when several processes (replicas, test workers) race: each builds in a private temporary
folder next to the target, writes a completion marker, and renames it into place; a loser of the
rename discards its copy and uses the winner's folder.

Prebuild everything (tiny SD and InstructPix2Pix, the tiny preset's LoRAs, tiny BLIP/CLIP):
`python -m serve_app.models.tiny --cache-dir DIR`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from serve_app.models.cache import build_atomically

logger = logging.getLogger(__name__)

TINY_SD_DIR = "tiny-sd"
TINY_IP2P_DIR = "tiny-instruct-pix2pix"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SEED = 0
LORA_RANK = 4
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Multiplies the random LoRA up-projections so every adapter changes the image clearly:
# mean |pixel diff| vs the base image is ~0.1 on [0, 1] (gain 2 gave ~0.03).
LORA_GAIN = 8.0


def tiny_lora_dir_name(seed: int) -> str:
    return f"tiny-lora-{seed}"


# --- tiny Stable Diffusion ---------------------------------------------------------------------


def _build_tiny_sd(folder: Path) -> None:
    """Tiny UNet/VAE/CLIP text encoder with the trained tiny tokenizer; DDIM; no safety checker."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from serve_app.models.tokenizer import build_tiny_clip_tokenizer

    # 1. Tokenizer first: the text encoder's vocabulary and special ids follow it.
    tokenizer = build_tiny_clip_tokenizer(folder / "tokenizer")
    # 2. Models, each from its own fixed seed so the weights never depend on build order.
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    torch.manual_seed(SEED + 2)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        layer_norm_eps=1e-5,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    # 3. Save as a normal diffusers folder (the tokenizer folder is rewritten identically).
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def ensure_tiny_sd(cache_dir: Path) -> Path:
    """The tiny SD pipeline folder under `cache_dir` (built once; safe under concurrency)."""
    return build_atomically(Path(cache_dir) / TINY_SD_DIR, _build_tiny_sd)


# --- tiny InstructPix2Pix ------------------------------------------------------------------------


def _build_tiny_ip2p(folder: Path, sd_folder: Path) -> None:
    """The tiny SD's VAE, text encoder and tokenizer with a UNet of 8 input channels (the noisy
    latents and the source image's latents, as InstructPix2Pix's UNet takes them), Euler ancestral
    as timbrooks/instruct-pix2pix ships; saved as a StableDiffusionInstructPix2PixPipeline folder."""
    import torch
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    base = StableDiffusionPipeline.from_pretrained(sd_folder)
    torch.manual_seed(SEED + 3)
    unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 8})
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(base.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def ensure_tiny_ip2p(cache_dir: Path) -> Path:
    """The tiny InstructPix2Pix folder under `cache_dir` (built once, after the tiny SD it shares parts with)."""
    sd_folder = ensure_tiny_sd(cache_dir)
    return build_atomically(Path(cache_dir) / TINY_IP2P_DIR, lambda tmp: _build_tiny_ip2p(tmp, sd_folder))


# --- tiny LoRA -----------------------------------------------------------------------------------


def _build_tiny_lora(folder: Path, sd_folder: Path, seed: int) -> None:
    """A random rank-4 LoRA on the tiny UNet's attention projections, seeded by `seed`."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    torch.manual_seed(seed)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=list(LORA_TARGETS), init_lora_weights=False)
    unet.add_adapter(config)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.mul_(LORA_GAIN)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=state, weight_name=LORA_WEIGHT_NAME, safe_serialization=True
    )


def ensure_tiny_lora(cache_dir: Path, seed: int) -> Path:
    """The folder of tiny LoRA `seed` (holding LORA_WEIGHT_NAME); builds the tiny SD first if needed."""
    cache_dir = Path(cache_dir)
    sd_folder = ensure_tiny_sd(cache_dir)
    target = cache_dir / tiny_lora_dir_name(seed)
    return build_atomically(target, lambda tmp: _build_tiny_lora(tmp, sd_folder, seed))


def parse_tiny_lora_path(path: str) -> int | None:
    """The seed of a `tiny:<seed>` LoRA path, or None for any other path."""
    if not path.startswith("tiny:"):
        return None
    try:
        return int(path.removeprefix("tiny:"))
    except ValueError as exc:
        raise ValueError(f"Bad tiny LoRA path {path!r}; expected tiny:<integer seed>.") from exc


# --- CLI -----------------------------------------------------------------------------------------


def prebuild(cache_dir: Path, lora_seeds: Sequence[int]) -> list[Path]:
    """Build tiny SD and InstructPix2Pix, the given tiny LoRAs and (when available) tiny BLIP/CLIP;
    return the folders."""
    folders = [ensure_tiny_sd(cache_dir), ensure_tiny_ip2p(cache_dir)]
    folders += [ensure_tiny_lora(cache_dir, seed) for seed in lora_seeds]
    try:
        from serve_app.models import tiny_vision
    except ImportError:  # pragma: no cover - the vision builders live in a separate module
        logger.warning("serve_app.models.tiny_vision not available; skipping tiny BLIP/CLIP")
    else:
        for name in ("ensure_tiny_blip", "ensure_tiny_clip"):
            builder = getattr(tiny_vision, name, None)
            if builder is not None:
                folders.append(builder(cache_dir))
    return folders


def _preset_lora_seeds(preset_name: str) -> list[int]:
    from serve_app.presets import load_preset

    seeds = []
    for lora in load_preset(preset_name).loras:
        seed = parse_tiny_lora_path(lora.path)
        if seed is not None:
            seeds.append(seed)
    return seeds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prebuild the tiny offline models into a cache folder.")
    parser.add_argument("--cache-dir", type=Path, required=True, help="Model cache folder (model_cache_dir).")
    parser.add_argument("--preset", default="tiny", help="Preset whose tiny:<seed> LoRAs to build.")
    parser.add_argument("--lora-seeds", type=int, nargs="*", default=None, help="Override the LoRA seeds.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = args.lora_seeds if args.lora_seeds is not None else _preset_lora_seeds(args.preset)
    for folder in prebuild(args.cache_dir.expanduser().resolve(), seeds):
        print(folder)


if __name__ == "__main__":
    main()
