"""Desk / not-desk zero-shot classifier (CLIP): a plain class so unit tests run it without Ray.

The label prompts come from the preset (`ClassifierModel.desk_labels` / `other_labels`). Their text
embeddings are computed once at load; a batch of images then costs one vision forward pass. The
score is the softmax probability mass on the desk labels, so it stays in [0, 1] whatever the number
of labels, and `is_desk = score >= threshold`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from PIL import Image

from serve_app.errors import ConfigurationError
from serve_app.models.tiny_vision import ensure_tiny_clip, load_pretrained
from serve_app.presets import ClassifierModel
from serve_app.stages import Classification

logger = logging.getLogger(__name__)


def _features(output: object) -> torch.Tensor:
    """Projected features from get_*_features (a tensor in transformers 4, an output object in 5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[attr-defined]


class DeskClassifierEngine:
    """Loads CLIP once, embeds the label prompts once, classifies batches of images."""

    def __init__(self, model: ClassifierModel, cache_dir: Path, device: str = "auto", dtype: str = "auto") -> None:
        from transformers import AutoProcessor, CLIPModel

        if not model.desk_labels or not model.other_labels:
            raise ConfigurationError("The desk classifier needs at least one desk label and one other label.")
        self.model_id = model.model_id
        self.threshold = model.threshold
        self.labels = [*model.desk_labels, *model.other_labels]
        self.num_desk_labels = len(model.desk_labels)
        self.processor, self.model, self.device, self.dtype = load_pretrained(
            "desk classifier", model, cache_dir, ensure_tiny_clip, (AutoProcessor, CLIPModel), device, dtype
        )
        self._lock = threading.Lock()
        # Label embeddings, normalised and pre-multiplied by CLIP's learned temperature.
        with torch.inference_mode():
            text = self.processor(text=self.labels, return_tensors="pt", padding=True, truncation=True)
            text = {k: v.to(self.device) for k, v in text.items()}
            embeds = _features(self.model.get_text_features(**text)).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            self._text_embeds = embeds * self.model.logit_scale.exp().float()

    @torch.inference_mode()
    def scores(self, images: list[Image.Image]) -> list[float]:
        """Probability mass on the desk labels, one per image."""
        if not images:
            return []
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        pixel_values = self.processor(images=rgb, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with self._lock:
            embeds = _features(self.model.get_image_features(pixel_values=pixel_values)).float()
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        probs = (embeds @ self._text_embeds.T).softmax(dim=-1)
        desk_mass = probs[:, : self.num_desk_labels].sum(dim=-1).clamp(0.0, 1.0)
        return [float(score) for score in desk_mass.cpu()]

    def classify(self, images: list[Image.Image]) -> list[Classification]:
        """One Classification per image, in order."""
        return [Classification(is_desk=score >= self.threshold, score=score) for score in self.scores(images)]

    def info(self) -> dict[str, str]:
        return {"model_id": self.model_id, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}
