"""Tiny BLIP captioner and tiny CLIP classifier built offline from small configs (fixed seeds).

The `tiny` preset uses them so the graph runs on a laptop with no download. Each is saved with
`save_pretrained` and loaded back by the engines with `from_pretrained(folder)`, the same code path
a hub id takes. Builds are idempotent and safe when several processes (replicas) race: each builds
in a private temporary folder next to the target, marks it complete, and renames it into place;
the loser of the rename discards its copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from serve_app.models.cache import build_atomically

if TYPE_CHECKING:
    import torch

    from serve_app.presets import ModelSpec

logger = logging.getLogger(__name__)

TINY_MODEL_ID = "tiny"
TINY_BLIP_DIR = "tiny-blip"
TINY_CLIP_DIR = "tiny-clip"
SEED = 0
IMAGE_SIZE = 32
HIDDEN = 32
#: The vision tower both tiny models share: 2 layers of HIDDEN, 8-pixel patches.
VISION = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "projection_dim": HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
}

# WordPiece vocabulary of the tiny BLIP: caption-style English and desk words, plus every letter
# and digit (also as "##" continuations) so any word tokenizes without [UNK].
BLIP_WORDS: tuple[str, ...] = tuple(
    (
        "a an the of on with and in at near next to under over top front back side its is are there "
        "this that it two three some many small large big black white gray grey silver wooden wood "
        "dark light bright warm cozy clean modern minimal room home office workspace setup photo "
        "picture image view desk desks table computer monitor monitors screen display keyboard mouse "
        "pad mat lamp light chair plant plants pot laptop notebook stand arm speaker speakers headset "
        "headphones webcam camera microphone mic shelf shelves charger cable cables cup mug book books "
        "phone tablet window wall floor bed sitting sits placed standing"
    ).split()
)
_BLIP_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


# --- tiny BLIP ---------------------------------------------------------------------------------


def _blip_vocab() -> dict[str, int]:
    tokens: list[str] = list(_BLIP_SPECIALS)
    for token in (*BLIP_WORDS, *_CHARS, *(f"##{c}" for c in _CHARS), ".", ",", "'", "##s"):
        if token not in tokens:
            tokens.append(token)
    return {token: index for index, token in enumerate(tokens)}


def _build_tiny_blip(folder: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    # 1. Tokenizer: WordPiece plus BLIP's decoder start token [DEC] (as bos) and [ENC].
    tokenizer = BertTokenizer(vocab=_blip_vocab(), model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
    )
    # 2. Model: generation starts at [DEC] and stops at [SEP], as in the real checkpoints.
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "encoder_hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "projection_dim": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**VISION, "initializer_range": 0.02},
        projection_dim=HIDDEN,
        image_text_hidden_size=HIDDEN,
    )
    _save_seeded(BlipForConditionalGeneration, config, processor, folder)


def _save_seeded(model_cls: Any, config: Any, processor: Any, folder: Path) -> None:
    """Instantiate `model_cls(config)` with the fixed seed (random weights, same every build) and save
    it with its processor, so from_pretrained(folder) loads it like a hub model."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_cls(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def ensure_tiny_blip(cache_dir: Path) -> Path:
    """The folder of the tiny BLIP captioner under `cache_dir`, built on first use."""
    return build_atomically(Path(cache_dir) / TINY_BLIP_DIR, _build_tiny_blip)


# --- tiny CLIP ---------------------------------------------------------------------------------


def _build_tiny_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from serve_app.models.tokenizer import build_tiny_clip_tokenizer

    # 1. Tokenizer (trained offline, deterministic) and a small image processor.
    tokenizer = build_tiny_clip_tokenizer(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tokenizer,
    )
    # 2. Model: the text tower must cover the tokenizer and pool at its end token.
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "projection_dim": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=VISION,
        projection_dim=HIDDEN,
    )
    _save_seeded(CLIPModel, config, processor, folder)


def ensure_tiny_clip(cache_dir: Path) -> Path:
    """The folder of the tiny CLIP classifier under `cache_dir`, built on first use."""
    return build_atomically(Path(cache_dir) / TINY_CLIP_DIR, _build_tiny_clip)


def model_source(model: ModelSpec, cache_dir: Path, tiny_builder: Callable[[Path], Path]) -> tuple[str, str | None]:
    """(from_pretrained source, revision): the built tiny folder for `tiny`, else the id/folder as given."""
    if model.model_id == TINY_MODEL_ID:
        return str(tiny_builder(Path(cache_dir))), None
    return model.model_id, model.revision


class Loaded(NamedTuple):
    """A processor (or tokenizer) and its model, on their device in eval mode."""

    processor: Any
    model: Any
    device: torch.device
    dtype: torch.dtype


def load_pretrained(
    what: str,
    model: ModelSpec,
    cache_dir: Path,
    tiny_builder: Callable[[Path], Path],
    classes: tuple[Any, Any],
    device: str = "auto",
    dtype: str = "auto",
) -> Loaded:
    """`classes` (processor, model) loaded with from_pretrained from the spec's source (the tiny
    folder for `tiny`, built on first use), the model moved to the device in eval mode; logged,
    with its share of the GPU."""
    from serve_app.models.device import log_gpu_share, resolve_device, resolve_dtype

    processor_cls, model_cls = classes
    on = resolve_device(device)
    as_dtype = resolve_dtype(dtype, on)
    source, revision = model_source(model, cache_dir, tiny_builder)
    processor = processor_cls.from_pretrained(source, revision=revision)
    loaded = model_cls.from_pretrained(source, revision=revision, dtype=as_dtype)
    loaded.to(on).eval()
    logger.info("%s %s loaded from %s on %s (%s)", what, model.model_id, source, on, as_dtype)
    log_gpu_share(f"{what} {model.model_id}", on)
    return Loaded(processor=processor, model=loaded, device=on, dtype=as_dtype)
