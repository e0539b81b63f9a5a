"""Image-aware edit analysis (source spec enhancement-api-options.md, recommended option 1):
the edit's image AND its instruction go to Gemini together, which answers what to change, what
to keep, and a better English instruction for InstructPix2Pix: `{edits, preserve, improved_prompt}`.

One `generateContent` call (https://ai.google.dev/gemini-api/docs/image-understanding,
.../structured-output): the image as an `inlineData {mimeType, data}` part and the task as a
`text` part, with `generationConfig.responseMimeType: application/json` and a `responseSchema`
(the API's OpenAPI-subset schema: OBJECT, ARRAY, STRING, `propertyOrdering`), so the candidate's
text part is that JSON. The connection (URL, key variable, retries, rate limit) is the `gemini`
image backend's (`backends.gemini`), with the analysis model (`edits.analysis.model`).

Any failure (no key, the API failing, a blocked prompt, an answer that is not the schema's or
whose prompt is not English) raises an AppError; the edit flow then rewrites the instruction from
its text alone, as before, and records why.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve_app.backends.config import BackendsConfig
from serve_app.backends.providers.gemini import GeminiBackend, candidate_parts, inline_image
from serve_app.errors import UpstreamError
from serve_app.net import FetchPolicy
from serve_app.writing.glossary import has_hangul

MAX_PROMPT_CHARS = 600
MAX_ITEMS = 12

TASK = (
    "You prepare an instruction for InstructPix2Pix, an image editing model. Look at the image and "
    "read the user's edit request (Korean or English): {instruction!r}.\n"
    "Answer with JSON only:\n"
    "- edits: the specific changes the request asks for, each a short English phrase;\n"
    "- preserve: what in the image must stay as it is (e.g. the person's face, the background), "
    "short English phrases;\n"
    "- improved_prompt: one short, concrete English instruction in the imperative for the edit model "
    "('make the lighting warmer, keep the face unchanged'), at most "
    f"{MAX_PROMPT_CHARS} characters."
)

#: The answer's shape in the Gemini API's schema dialect (an OpenAPI 3.0 subset).
RESPONSE_SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "edits": {"type": "ARRAY", "items": {"type": "STRING"}},
        "preserve": {"type": "ARRAY", "items": {"type": "STRING"}},
        "improved_prompt": {"type": "STRING"},
    },
    "required": ["edits", "preserve", "improved_prompt"],
    "propertyOrdering": ["edits", "preserve", "improved_prompt"],
}


class EditAnalysisConfig(BaseModel):
    """Image-aware analysis of an edit request (`edits.analysis:`), used when a request is rewritten."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="gemini-2.5-flash", description="A Gemini model that reads images, answers JSON.")
    provider: Literal["gemini", "off"] = Field(
        default="gemini",
        description="gemini: the image and the instruction go to Gemini (backends.gemini's URL and key, "
        "$GEMINI_API_KEY) when the instruction is rewritten; off, or no key: the text-only rewrite.",
    )


class EditAnalysis(BaseModel):
    """What the analysis answered: what to change, what to keep, the edit model's instruction."""

    model_config = ConfigDict(extra="ignore")

    edits: list[str] = Field(max_length=MAX_ITEMS)
    preserve: list[str] = Field(max_length=MAX_ITEMS)
    improved_prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)

    @field_validator("edits", "preserve")
    @classmethod
    def _phrases(cls, value: list[str]) -> list[str]:
        return [item.strip()[:200] for item in value if item.strip()]

    @field_validator("improved_prompt")
    @classmethod
    def _english(cls, value: str) -> str:
        text = " ".join(value.split())
        if not text:
            raise ValueError("the prompt is blank")
        if has_hangul(text):
            raise ValueError("the prompt still contains Korean; it must be English")
        return text


class InvalidAnalysis(UpstreamError):
    default_code = "ANALYSIS_INVALID_OUTPUT"


def parse_analysis(answer: object) -> EditAnalysis:
    """The analysis in a generateContent answer: its candidate's text parts as the schema's JSON.
    UPSTREAM_REJECTED when blocked, UPSTREAM_BAD_RESPONSE when not the API's body,
    ANALYSIS_INVALID_OUTPUT when the text is not the schema's JSON (or its prompt is not English)."""
    candidate, parts = candidate_parts(answer)
    text = "".join(str(part["text"]) for part in parts if isinstance(part.get("text"), str) and not part.get("thought"))
    if not text.strip():
        reason = candidate.get("finishReason") or "no text part"
        raise UpstreamError(f"Gemini gave no analysis ({reason}).", error_code="UPSTREAM_REJECTED")
    try:
        return EditAnalysis.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise InvalidAnalysis(f"Gemini's analysis is not the asked JSON: {str(exc)[:200]}") from exc


class GeminiEditAnalyst:
    """Asks Gemini about an edit: the image and the instruction in, `EditAnalysis` out."""

    def __init__(self, client: GeminiBackend) -> None:
        self.client = client
        self.model = client.cfg.model
        self.name = f"gemini:{self.model}"

    async def analyse(self, image: bytes, instruction: str) -> tuple[EditAnalysis, dict[str, object]]:
        """The analysis, and what a result records of the call (model, seconds, attempts)."""
        self.client.api_key  # noqa: B018 - BACKEND_NOT_CONFIGURED before any request
        started = time.perf_counter()
        attempts_before = self.client.http.attempts
        answer = await self.client.generate_content(
            [inline_image(image), {"text": TASK.format(instruction=instruction)}],
            {"responseMimeType": "application/json", "responseSchema": RESPONSE_SCHEMA, "temperature": 0},
        )
        analysis = parse_analysis(answer)
        call = {
            "model": self.model,
            "seconds": round(time.perf_counter() - started, 4),
            "attempts": self.client.http.attempts - attempts_before,
        }
        return analysis, call

    async def aclose(self) -> None:
        await self.client.aclose()


def build_analyst(
    cfg: EditAnalysisConfig, backends: BackendsConfig, fetch: FetchPolicy | None = None
) -> GeminiEditAnalyst | None:
    """The configured analyst (None when off): the gemini backend's connection with the analysis model."""
    if cfg.provider == "off":
        return None
    client_cfg = backends.cloud("gemini").model_copy(update={"model": cfg.model, "options": {}})
    return GeminiEditAnalyst(GeminiBackend(client_cfg, fetch=fetch))
