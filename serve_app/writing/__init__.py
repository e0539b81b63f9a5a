"""Prompt writing and Korean -> English translation (SPEC.md section 2): a chat API when configured,
deterministic templates otherwise. `build_writer` picks one from config."""

from __future__ import annotations

from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.config import PromptWriterConfig
from serve_app.writing.template import TemplateWriter

__all__ = ["PromptWriter", "TemplateWriter", "Written", "build_writer"]


def build_writer(cfg: PromptWriterConfig) -> PromptWriter:
    from serve_app.writing.glossary import load_glossary

    template = TemplateWriter(load_glossary(cfg.glossary_path))
    if cfg.provider == "template":
        return template
    from serve_app.writing.chat import ChatWriter, FallbackWriter

    chat = ChatWriter(cfg.chat)
    return FallbackWriter(chat, template) if cfg.fallback_to_template else chat
