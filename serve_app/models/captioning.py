"""Image captioning engine (BLIP): a plain class so unit tests run it without Ray.

`model_id: tiny` builds the tiny BLIP offline; any other id is a hub id or a local folder
(e.g. Salesforce/blip-image-captioning-base) and goes through the same `from_pretrained` path.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from PIL import Image

from serve_app.models.tiny_vision import ensure_tiny_blip, load_pretrained
from serve_app.presets import ModelSpec

logger = logging.getLogger(__name__)


class CaptionEngine:
    """Loads a BLIP-style captioner once and captions batches of images greedily (deterministic)."""

    def __init__(self, model: ModelSpec, cache_dir: Path, device: str = "auto", dtype: str = "auto") -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_id = model.model_id
        self.processor, self.model, self.device, self.dtype = load_pretrained(
            "captioner", model, cache_dir, ensure_tiny_blip, (AutoProcessor, AutoModelForImageTextToText), device, dtype
        )
        # Captions longer than the decoder's position table would fail; clamp to it.
        text_config = getattr(self.model.config, "text_config", None)
        self.max_positions = int(getattr(text_config, "max_position_embeddings", 512))
        # One generate at a time: a replica may call from several threads.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def caption(self, images: list[Image.Image], max_new_tokens: int = 30) -> list[str]:
        """One caption per image, in order; greedy decoding so equal inputs give equal captions."""
        if not images:
            return []
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        inputs = self.processor(images=rgb, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        max_new_tokens = max(1, min(max_new_tokens, self.max_positions - 2))
        with self._lock:
            output_ids = self.model.generate(
                pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
            )
        texts = self.processor.batch_decode(output_ids, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]

    def info(self) -> dict[str, str]:
        return {"model_id": self.model_id, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}
