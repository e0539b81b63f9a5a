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
        description="template: deterministic, offline (glossary translation); chat: an OpenAI-compatible chat API.",
    )
    chat: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", 60, 0.0),
        description="The chat API (any OpenAI-compatible server: OpenAI, vLLM, Ollama...).",
    )
    fallback_to_template: bool = Field(
        default=True, description="When the chat API fails or answers invalid JSON twice, write from templates."
    )
    glossary_path: str | None = Field(default=None, description="Korean->English glossary; configs/ when None.")
