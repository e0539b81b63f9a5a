"""The prompt writer over an OpenAI-compatible chat completions API (OpenAI, vLLM, Ollama, ...).

Each call asks for JSON that follows a schema (`response_format: json_schema`, strict), validates
the answer (parses, has the field, is English: no Hangul, not empty, bounded length) and asks
once more, saying what was wrong, when it is not valid. A second invalid answer, a refusal or an
API failure raises; the writer chain (serve_app.writing.chain) then tries the next writer and
records why.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator

from serve_app.backends.http import ProviderHTTP, bad_response
from serve_app.backends.provider import CloudBackendConfig
from serve_app.errors import ConfigurationError, UpstreamError
from serve_app.products.scenes.payload import Scene
from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.glossary import has_hangul, unwrap_alt

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=BaseModel)

MAX_PROMPT_CHARS = 600

SYSTEM = (
    "You write prompts for a Stable Diffusion image model. Answer only with JSON that matches the "
    "schema. The prompt must be in English (translate any Korean), concrete and visual: who is in "
    "the picture and how they look, where it is, the light and the mood, as comma-separated phrases, "
    f"at most {MAX_PROMPT_CHARS} characters. No names, no dialogue, no text to render in the image."
)


class PromptAnswer(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)

    @field_validator("prompt")
    @classmethod
    def _english(cls, value: str) -> str:
        if has_hangul(value):
            raise ValueError("the prompt still contains Korean; it must be English")
        if not value.strip():
            raise ValueError("the prompt is blank")
        return value.strip()


class TranslationAnswer(BaseModel):
    english: str = Field(min_length=1, max_length=2000)

    @field_validator("english")
    @classmethod
    def _english(cls, value: str) -> str:
        if has_hangul(value):
            raise ValueError("the translation still contains Korean")
        return value.strip()


def _schema(name: str, field: str) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": name,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {field: {"type": "string"}},
                "required": [field],
                "additionalProperties": False,
            },
        },
    }


class InvalidAnswer(UpstreamError):
    default_code = "WRITER_INVALID_OUTPUT"


class ChatWriter(PromptWriter):
    def __init__(self, cfg: CloudBackendConfig, **http: Any) -> None:
        self.cfg = cfg
        self.name = f"chat:{cfg.model}"
        self.http = ProviderHTTP("the chat API", cfg, headers=self._auth, **http)
        self.calls = 0

    def _auth(self) -> dict[str, str]:
        import os

        key = os.environ.get(self.cfg.api_key_env, "").strip()
        if not key:
            raise ConfigurationError(
                f"prompt_writer.provider is chat, but ${self.cfg.api_key_env} is not set.",
                error_code="WRITER_NOT_CONFIGURED",
            )
        return {"Authorization": f"Bearer {key}"}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _ask(self, task: str, content: str, answer: type[A], field: str) -> A:
        """One schema-bound question, asked again once when the answer is invalid."""
        messages: list[dict[str, str]] = [
            {"role": "system", "content": f"{SYSTEM}\n\nTask: {task}"},
            {"role": "user", "content": content},
        ]
        problem = ""
        for attempt in (1, 2):
            self.calls += 1
            body = await self.http.json(
                "POST",
                "/chat/completions",
                json={
                    "model": self.cfg.model,
                    "messages": messages,
                    "response_format": _schema(answer.__name__, field),
                    "temperature": 0,
                    **self.cfg.options,
                },
            )
            try:
                message = body["choices"][0]["message"]
            except (KeyError, IndexError, TypeError) as exc:
                raise bad_response("the chat API", "a body without choices[0].message") from exc
            if message.get("refusal"):
                raise UpstreamError(
                    f"The chat model refused: {message['refusal'][:200]}", error_code="UPSTREAM_REJECTED"
                )
            raw = message.get("content") or ""
            try:
                return answer.model_validate(json.loads(raw))
            except (ValueError, ValidationError) as exc:
                problem = _describe(exc)
                logger.info("chat writer: invalid answer on attempt %d: %s", attempt, problem)
                messages += [
                    {"role": "assistant", "content": raw[:2000]},
                    {"role": "user", "content": f"That answer is invalid: {problem}. Answer again with valid JSON."},
                ]
        raise InvalidAnswer(f"The chat model answered invalid JSON twice: {problem}.")

    async def translate(self, text: str) -> Written:
        if not has_hangul(text):
            return Written(text=text.strip(), source=text, writer="none")
        answer = await self._ask(
            "Translate this image description into English. Keep every visual detail.",
            text,
            TranslationAnswer,
            "english",
        )
        return Written(text=answer.english, source=text, writer=self.name)

    async def scene_prompt(self, scene: Scene) -> Written:
        answer = await self._ask(
            "Write one image prompt for this scene of a script: its characters (gender 0 male, 1 "
            "female), its narration, and the emotions of its dialogue.",
            scene.model_dump_json(),
            PromptAnswer,
            "prompt",
        )
        source = f"script {scene.script_metadata.script_id} scene {scene.scene_id}"
        return Written(text=answer.prompt, source=source, writer=self.name)

    async def article_prompt(self, alt: str) -> Written:
        answer = await self._ask(
            "Write one image prompt for an article illustration with this description (alt text).",
            unwrap_alt(alt),
            PromptAnswer,
            "prompt",
        )
        return Written(text=answer.prompt, source=alt, writer=self.name)

    async def edit_prompt(self, instruction: str) -> Written:
        answer = await self._ask(
            "Rewrite this image edit request as one short English instruction for InstructPix2Pix, in "
            "the imperative ('make the lighting warmer', 'turn the sofa into green velvet'): say only "
            "what should change, concretely; the rest of the picture stays as it is.",
            instruction,
            PromptAnswer,
            "prompt",
        )
        return Written(text=answer.prompt, source=instruction, writer=self.name)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())[:300]
    return f"not JSON ({exc})"[:300]
