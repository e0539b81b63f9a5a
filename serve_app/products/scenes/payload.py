"""A script's scene, as the source spec's Spring Boot backend sends it (scene-image-service-readme.md):
script metadata with its characters (gender 0 male, 1 female), the scene id, and its audios
(narration, and dialogue with its character and emotion).

Every model of the body is a `SeedBody`: read as a Spring/Jackson client sends it (unknown fields
ignored, null as left out, at every level)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.backends.config import Variant
from serve_app.lenient import SeedBody
from serve_app.patterns import NON_BLANK_PATTERN

Text = Annotated[str, Field(max_length=2000)]

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=NON_BLANK_PATTERN)]

MAX_CHARACTERS = 20

MAX_AUDIOS = 50


class Character(SeedBody):
    name: Name = Field(description="The character's name, as the dialogue names them.")
    # "the seed" here is the source spec: this text is in the OpenAPI document, kept as published
    gender: Literal[0, 1] = Field(description="0: male, 1: female (the seed's encoding).")
    description: Text = Field(default="", description="Looks and role, Korean or English.")

    @field_validator("gender", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("gender must be 0 (male) or 1 (female), not a boolean")
        return value


class ScriptMetadata(SeedBody):
    title: Annotated[str, Field(min_length=1, max_length=200, pattern=NON_BLANK_PATTERN)]
    script_id: Annotated[int, Field(ge=0, le=2**53)] = Field(description="Scenes of one script share its style.")
    characters: list[Character] = Field(default_factory=list, max_length=MAX_CHARACTERS)

    @field_validator("script_id", mode="before")
    @classmethod
    def _int_only(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("script_id must be an integer")
        return value


# What `_dialogue_has_a_speaker` checks, stated in the JSON schema (and so in the OpenAPI document).
DIALOGUE_NEEDS_A_SPEAKER = {
    "if": {"properties": {"type": {"const": "dialogue"}}, "required": ["type"]},
    "then": {"required": ["character"], "properties": {"character": {"type": "string"}}},
}


class Audio(SeedBody):
    """A narration, or a line of dialogue, which names its character."""

    model_config = ConfigDict(json_schema_extra=DIALOGUE_NEEDS_A_SPEAKER)

    type: Literal["narration", "dialogue"]
    text: Annotated[str, Field(min_length=1, max_length=2000, pattern=NON_BLANK_PATTERN)]
    character: Name | None = Field(
        default=None, description="Who speaks: required for a dialogue, one of script_metadata.characters."
    )
    emotion: Annotated[str, Field(max_length=100)] | None = Field(default=None, description="How they say it.")

    @model_validator(mode="after")
    def _dialogue_has_a_speaker(self) -> Audio:
        if self.type == "dialogue" and not self.character:
            raise ValueError("a dialogue audio needs its character")
        return self


class Scene(SeedBody):
    """A scene of a script, as the source spec's Spring Boot backend sends it."""

    script_metadata: ScriptMetadata
    scene_id: Annotated[int, Field(ge=0, le=2**53)]
    audios: list[Audio] = Field(min_length=1, max_length=MAX_AUDIOS)

    @model_validator(mode="after")
    def _speakers_are_characters(self) -> Scene:
        known = {character.name for character in self.script_metadata.characters}
        unknown = sorted({a.character for a in self.audios if a.character and a.character not in known})
        if unknown and known:
            raise ValueError(f"dialogue by characters not in script_metadata.characters: {', '.join(unknown)}")
        return self

    @property
    def style_seed(self) -> int:
        """The seed every scene of this script uses: derived from the script id, so one script keeps
        one look (same LoRA, same noise) whoever calls and whenever."""
        digest = hashlib.sha256(f"imagegen-scene:{self.script_metadata.script_id}".encode()).digest()
        return int.from_bytes(digest[:6], "big")


class ScenePayload(BaseModel):
    kind: Literal["scene"] = "scene"
    scene: Scene
    chain: Literal["scene_internal", "scene_external"]
    variant: Variant | None = Field(default=None, description="The A/B arm this caller is in, if any.")
