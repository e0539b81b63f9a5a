"""The typed payloads of the scene and article products, validated once at the edge and carried in
the task (`ResolvedGenerate.product`) to the flow that runs them.

Scene images keep the seed's body (scene-image-service-readme.md): script metadata with its
characters (gender 0 male, 1 female), the scene id, and the scene's audios (narration, and
dialogue with its character and emotion). Article images take the seed's placeholders
(image-generation-storage-guide.md): `{index, alt}`, alt text often Korean.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.patterns import NON_BLANK_PATTERN

Text = Annotated[str, Field(max_length=2000)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=NON_BLANK_PATTERN)]

MAX_CHARACTERS = 20
MAX_AUDIOS = 50


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="The character's name, as the dialogue names them.")
    gender: Literal[0, 1] = Field(description="0: male, 1: female (the seed's encoding).")
    description: Text = Field(default="", description="Looks and role, Korean or English.")

    @field_validator("gender", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("gender must be 0 (male) or 1 (female), not a boolean")
        return value


class ScriptMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(min_length=1, max_length=200, pattern=NON_BLANK_PATTERN)]
    script_id: Annotated[int, Field(ge=0, le=2**53)] = Field(description="Scenes of one script share its style.")
    characters: list[Character] = Field(default_factory=list, max_length=MAX_CHARACTERS)

    @field_validator("script_id", mode="before")
    @classmethod
    def _int_only(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("script_id must be an integer")
        return value


class Audio(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["narration", "dialogue"]
    text: Annotated[str, Field(min_length=1, max_length=2000, pattern=NON_BLANK_PATTERN)]
    character: Name | None = Field(default=None, description="Who speaks (dialogue only).")
    emotion: Annotated[str, Field(max_length=100)] | None = Field(default=None, description="How they say it.")

    @model_validator(mode="after")
    def _dialogue_has_a_speaker(self) -> Audio:
        if self.type == "dialogue" and not self.character:
            raise ValueError("a dialogue audio needs its character")
        return self


class Scene(BaseModel):
    """A scene of a script, as the seed's Spring Boot backend sends it."""

    model_config = ConfigDict(extra="forbid")

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


class Variant(BaseModel):
    """One arm of an A/B test: a share of callers whose images come from its own backend chain."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = Field(
        description="Recorded on results and metrics."
    )
    percent: Annotated[float, Field(gt=0, le=100)] = Field(description="Share of callers, in percent.")
    chain: list[str] = Field(min_length=1, description="Backends tried in order (entries as in backends.chains).")


class ScenePayload(BaseModel):
    kind: Literal["scene"] = "scene"
    scene: Scene
    chain: Literal["scene_internal", "scene_external"]
    variant: Variant | None = Field(default=None, description="The A/B arm this caller is in, if any.")


class Placeholder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Annotated[int, Field(ge=0, le=10_000)] = Field(description="Where the image goes in the article.")
    alt: Annotated[str, Field(min_length=1, max_length=1000, pattern=NON_BLANK_PATTERN)] = Field(
        description="The image's description (alt text), Korean or English; the seed wraps it as '[이미지 설명: ...]'."
    )


class ArticlePayload(BaseModel):
    kind: Literal["article"] = "article"
    placeholders: list[Placeholder]
    style: str = Field(default="", description="Words added to every placeholder's prompt.")
    variant: Variant | None = None


TextureWord = Annotated[str, Field(min_length=1, max_length=60, pattern=NON_BLANK_PATTERN)]
OptTextureWord = Annotated[str, Field(max_length=60)] | None


class Texture(BaseModel):
    """One texture to make."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product_type: TextureWord = Field(description="What the fabric is for: down jacket, sofa, 패딩 ...")
    material: TextureWord = Field(description="nylon, wool, denim, 가죽 ...")
    colour: TextureWord = Field(description="navy blue, 베이지 ...")
    pattern: OptTextureWord = Field(default=None, description="quilted, herringbone, plaid ... (optional)")
    finish: OptTextureWord = Field(default=None, description="matte, glossy, brushed ... (optional)")

    @field_validator("pattern", "finish")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def canonical(self) -> dict[str, str | None]:
        """Case- and space-insensitive parameters: the same texture however it was typed."""
        return {name: " ".join(value.lower().split()) if value else None for name, value in self.model_dump().items()}


class TextureItem(BaseModel):
    """One texture of a request, resolved at the edge: its prompt, seed and cache address."""

    texture: Texture
    prompt: str
    negative_prompt: str
    seed: int
    content_hash: str
    untranslated: list[str] = Field(default_factory=list)
    cached: dict[str, Any] | None = Field(default=None, description="The cache's entry, when it had this texture.")


class TexturePayload(BaseModel):
    kind: Literal["texture"] = "texture"
    items: list[TextureItem]
    tileable: bool = False
    variant: Variant | None = None


class EditPayload(BaseModel):
    """An instruction edit: the uploaded image (the task's input) changed as the instruction says."""

    kind: Literal["edit"] = "edit"
    instruction: str = Field(description="As the caller wrote it, Korean or English.")
    image_guidance_scale: float
    rewrite: bool = Field(description="The prompt writer rewrites the instruction into an English edit prompt.")
    restore_faces: bool = Field(default=False, description="Face restoration after the edit.")
    chain: list[str] | None = Field(
        default=None, description="The backends this request asked for (backend=local|cloud); None: the edit chain."
    )
    variant: Variant | None = None


ProductPayload = Annotated[ScenePayload | ArticlePayload | TexturePayload | EditPayload, Field(discriminator="kind")]
