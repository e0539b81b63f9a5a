"""Prompt writing and Korean -> English translation (SPEC.md section 2): the glossary first, then a
chat API when configured, then the Translator model (serve_app.writing.chain). `build_writer` builds
the chain from config."""

from __future__ import annotations

from serve_app.retry import RetryConfig
from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.chain import WriterChain
from serve_app.writing.config import PromptWriterConfig
from serve_app.writing.machine import MachineTranslator, Translate
from serve_app.writing.template import TemplateWriter

__all__ = ["PromptWriter", "TemplateWriter", "Written", "WriterChain", "build_writer"]


def build_writer(
    cfg: PromptWriterConfig,
    translate: Translate | None = None,
    translator_model: str = "",
    retries: RetryConfig | None = None,
) -> PromptWriter:
    """The writer chain: the chat writer when configured, the glossary, then `translate` (the
    Translator deployment) when given and `cfg.machine_translation` is on. A chat writer without
    `fallback_to_template` is used alone."""
    from serve_app.writing.glossary import load_glossary

    template = TemplateWriter(load_glossary(cfg.glossary_path))
    chat = None
    if cfg.provider == "chat":
        from serve_app.writing.chat import ChatWriter

        chat = ChatWriter(cfg.chat)
        if not cfg.fallback_to_template:
            return chat
    machine = None
    if translate is not None and cfg.machine_translation:
        machine = MachineTranslator(translate, translator_model, retries)
    return WriterChain(template, chat, machine)
