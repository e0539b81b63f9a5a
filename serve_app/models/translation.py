"""Korean -> English machine translation (MarianMT): a plain class so unit tests run it without Ray.

`model_id: tiny` builds the tiny random-weight Marian offline (serve_app.models.tiny_marian); any
other id is a hub id or a local folder (e.g. Helsinki-NLP/opus-mt-ko-en) through the same
`from_pretrained` path. Decoding is greedy or beam search, never sampled, so equal inputs give
equal translations.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from serve_app.models.tiny_marian import ensure_tiny_marian
from serve_app.models.tiny_vision import load_pretrained
from serve_app.presets import TranslatorModel

logger = logging.getLogger(__name__)


class TranslationEngine:
    """Loads a Marian model once and translates batches of texts (deterministic decoding)."""

    def __init__(self, model: TranslatorModel, cache_dir: Path, device: str = "auto", dtype: str = "auto") -> None:
        from transformers import MarianMTModel, MarianTokenizer

        self.spec = model
        self.model_id = model.model_id
        self.tokenizer, self.model, self.device, self.dtype = load_pretrained(
            "translator", model, cache_dir, ensure_tiny_marian, (MarianTokenizer, MarianMTModel), device, dtype
        )
        self.max_input_tokens = min(
            int(self.tokenizer.model_max_length), int(self.model.config.max_position_embeddings)
        )
        # One generate at a time: a replica may call from several threads.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def translate(self, texts: list[str]) -> list[str]:
        """One English text per input, in order (whitespace collapsed; may be empty: the caller
        decides what an unusable translation means)."""
        if not texts:
            return []
        batch = self.tokenizer(
            [" ".join(text.split()) for text in texts],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_input_tokens,
        )
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        with self._lock:
            output_ids = self.model.generate(
                **batch,
                max_new_tokens=self.spec.max_new_tokens,
                num_beams=self.spec.num_beams,
                do_sample=False,
                min_new_tokens=1,
            )
        decoded = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [" ".join(text.split()) for text in decoded]

    def info(self) -> dict[str, str | int]:
        return {
            "model_id": self.model_id,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_new_tokens": self.spec.max_new_tokens,
            "num_beams": self.spec.num_beams,
        }
