"""Who writes image prompts and translates Korean (`prompt_writer:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.backends.provider import CloudBackendConfig, cloud_config


class PromptWriterConfig(BaseModel):
    """Who writes image prompts (scenes, articles) and translates Korean for the SD text encoder."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["template", "chat"] = Field(
        default="template",
        description="template: the glossary, then the Translator model (offline); chat: an OpenAI-compatible chat "
        "API first, then the glossary and the Translator when it fails.",
    )
    chat: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", 60, 0.0),
        description="The chat API (any OpenAI-compatible server: OpenAI, vLLM, Ollama...).",
    )
    fallback_to_template: bool = Field(
        default=True,
        description="The glossary and the Translator after a failed chat API call; false: the chat API alone.",
    )
    machine_translation: bool = Field(
        default=True,
        description="Korean with a word the glossary does not know goes to the Translator deployment (MarianMT) "
        "when no writer before it could write it; false: such words are dropped and reported.",
    )
    glossary_path: str | None = Field(default=None, description="Korean->English glossary; configs/ when None.")
