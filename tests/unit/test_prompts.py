"""The prompt builder with the desk product's templates: order, negatives, token budget."""

from __future__ import annotations

import pytest

from serve_app.items import extract_items
from serve_app.products.desk.flow import PROMPTS as DESK
from serve_app.prompts import (
    PromptTemplates,
    build_prompt,
    estimate_clip_tokens,
    load_prompt_templates,
    merge_negatives,
)
from serve_app.stages import DeskItem

SPEC_NEGATIVES = [
    "blurry",
    "low resolution",
    "distorted",
    "deformed",
    "people",
    "human",
    "cartoon",
    "anime",
    "painting",
    "clutter",
    "messy background",
    "bad lighting",
    "duplicate",
    "twin",
    "cloned",
]
CAPTION = "a white desk with a computer monitor, a keyboard and a mouse"


@pytest.fixture(scope="module")
def items() -> list[DeskItem]:
    return extract_items(CAPTION, "")


def negatives(text: str) -> list[str]:
    return [term.strip() for term in text.split(",")]


def test_templates_express_the_source_spec_intent() -> None:
    t = load_prompt_templates(DESK)
    assert load_prompt_templates(DESK) is t
    assert "realistic" in t.subject
    for word in ("aesthetically", "match", "complement", "tone", "lighting", "colour", "style"):
        assert word in t.style
    assert t.negative == SPEC_NEGATIVES
    assert t.max_tokens <= 75


def test_prompt_contains_every_part_in_order(items: list[DeskItem]) -> None:
    built = build_prompt(
        CAPTION, items, "minimal wooden desk setup", ["cozywood style"], templates=load_prompt_templates(DESK)
    )
    t = load_prompt_templates(DESK)
    prompt = built.prompt
    assert prompt.startswith("cozywood style, minimal wooden desk setup, ")
    positions = [prompt.index(part) for part in (t.subject, "with desk, monitor, keyboard, mouse", t.style, CAPTION)]
    assert positions == sorted(positions)
    assert built.trimmed == []
    assert built.estimated_tokens == estimate_clip_tokens(prompt) <= t.max_tokens


def test_trigger_words_first_and_deduplicated() -> None:
    built = build_prompt(
        "", [], "a desk", ["neonmin style", "glow", "neonmin style"], templates=load_prompt_templates(DESK)
    )
    assert built.prompt.startswith("neonmin style, glow, a desk, ")
    assert built.prompt.count("neonmin style") == 1


def test_without_caption_items_or_trigger_words() -> None:
    built = build_prompt("", [], "a cozy desk", [], templates=load_prompt_templates(DESK))
    t = load_prompt_templates(DESK)
    assert built.prompt == f"a cozy desk, {t.subject}, {t.style}, {t.quality}"


def test_negatives_always_include_the_source_specs_negatives() -> None:
    built = build_prompt("", [], "a desk", [], templates=load_prompt_templates(DESK))
    assert negatives(built.negative_prompt) == SPEC_NEGATIVES


def test_user_negatives_merged_without_duplicates() -> None:
    built = build_prompt(
        "",
        [],
        "a desk",
        [],
        user_negative="People, cartoon,  blurry ,watermark; text\nwatermark",
        templates=load_prompt_templates(DESK),
    )
    assert negatives(built.negative_prompt) == [*SPEC_NEGATIVES, "watermark", "text"]
    assert merge_negatives(["a", "b"], None) == "a, b"
    assert merge_negatives(["a"], " , ,") == "a"


def test_budget_trims_caption_then_items_but_keeps_user_text_and_triggers(items: list[DeskItem]) -> None:
    t = load_prompt_templates(DESK)
    user = "a minimalist walnut desk with a large window, soft morning sunlight, green plants and a cozy rug"
    built = build_prompt(
        CAPTION + " next to a window with curtains and a bookshelf full of books",
        items,
        user,
        ["cozywood style"],
        templates=load_prompt_templates(DESK),
    )
    assert built.prompt.startswith(f"cozywood style, {user}, ")
    assert built.estimated_tokens <= t.max_tokens
    assert built.trimmed[0] == "caption"
    assert t.subject in built.prompt


def test_items_trimmed_from_the_end() -> None:
    templates = PromptTemplates(
        subject="", style="", quality="", caption="{caption}", items="with {items}", max_tokens=10
    )
    items = [DeskItem(name=n, english=e, query=n) for n, e in [("a", "monitor"), ("b", "keyboard"), ("c", "mouse")]]
    built = build_prompt("a long caption that will go first", items, "desk", [], templates=templates)
    assert built.prompt == "desk, with monitor, keyboard, mouse"
    assert built.trimmed == ["caption"]
    built = build_prompt("", items, "desk setup in a room", [], templates=templates)
    assert built.prompt == "desk setup in a room, with monitor"
    assert built.trimmed == ["items"]


def test_user_text_and_triggers_never_dropped_even_over_budget() -> None:
    user = " ".join(["wooden desk"] * 60)
    built = build_prompt(CAPTION, [], user, ["cozywood style"], templates=load_prompt_templates(DESK))
    assert built.prompt == f"cozywood style, {user}"
    assert built.estimated_tokens > load_prompt_templates(DESK).max_tokens
    assert set(built.trimmed) == {"caption", "quality", "style", "subject"}


def test_token_estimate_heuristic() -> None:
    assert estimate_clip_tokens("") == 0
    assert estimate_clip_tokens("a desk") == 2
    assert estimate_clip_tokens("a desk, lamp.") == 5
    assert estimate_clip_tokens("photorealistic") == 2  # long words count as several tokens
    assert estimate_clip_tokens("the desk's 27 inch") == 6  # 's and single digits are pieces
    assert estimate_clip_tokens("마우스") == 6  # non-ASCII letters are byte-level: 2 each
