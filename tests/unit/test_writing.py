"""The prompt writers: the glossary translator, the template writer, and the chat writer against a
local OpenAI-compatible chat stub (schema-bound JSON, one retry on an invalid answer, the template
fallback, refusals and key errors)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from serve_app.errors import ConfigurationError, UpstreamError
from serve_app.products.scenes.payload import Scene
from serve_app.writing import TemplateWriter, WriterChain, build_writer
from serve_app.writing.chat import ChatWriter
from serve_app.writing.config import PromptWriterConfig
from serve_app.writing.glossary import has_hangul, load_glossary, unwrap_alt
from testbed.stubs.chat_stub import KEY, ChatStub
from testbed.stubs.fake_clock import FakeClock
from tests.support.bodies import scene_body

# The route's example as scene 3, with a third character who does not speak and 준호's answer.
SCENE = scene_body(42, scene_id=3)
SCENE["script_metadata"]["characters"].append({"name": "할머니", "gender": 1, "description": "카페 주인"})
SCENE["audios"].append({"type": "dialogue", "character": "준호", "text": "응, 잘 지냈어?", "emotion": "설렘"})


def test_glossary_translates_words_with_particles_and_compounds() -> None:
    glossary = load_glossary()
    result = glossary.translate("따뜻한 나무책상에 놓인 노트북, 햇살")
    assert result.english == "warm wood desk placed laptop, sunlight"
    assert result.untranslated == []


def test_glossary_reports_what_it_cannot_translate_and_keeps_english() -> None:
    result = load_glossary().translate("a cozy desk 그리고 쿼카")
    assert result.english == "a cozy desk"
    assert result.untranslated == ["쿼카"]


def test_unwrap_alt_takes_the_description_out_of_the_source_specs_wrapper() -> None:
    assert unwrap_alt("[이미지 설명: AI 로봇]") == "AI 로봇"
    assert unwrap_alt("  a robot ") == "a robot"


async def test_template_translation_leaves_english_alone() -> None:
    writer = TemplateWriter()
    assert (await writer.translate("a cozy desk")).text == "a cozy desk"
    korean = await writer.translate("아늑한 미니멀 책상")
    assert korean.text == "cozy minimal desk" and korean.writer == "template"


async def test_template_scene_prompt_is_english_and_names_the_speakers_not_everyone() -> None:
    written = await TemplateWriter().scene_prompt(Scene.model_validate(SCENE))
    assert not has_hangul(written.text)
    assert written.text.startswith("a woman (long"), written.text
    assert "a man" in written.text and "joy expression" in written.text and "excitement expression" in written.text
    assert "rain" in written.text and "evening" in written.text and "cafe" in written.text
    assert "cafe owner" not in written.text  # the grandmother does not speak in this scene
    assert "오랜만" not in written.text  # dialogue words are speech, not picture


async def test_template_writer_is_deterministic() -> None:
    scene = Scene.model_validate(SCENE)
    assert (await TemplateWriter().scene_prompt(scene)) == (await TemplateWriter().scene_prompt(scene))


def test_scene_seed_is_derived_from_the_script_id() -> None:
    one = Scene.model_validate(SCENE)
    other_scene = Scene.model_validate({**SCENE, "scene_id": 9})
    other_script = Scene.model_validate({**SCENE, "script_metadata": {**SCENE["script_metadata"], "script_id": 43}})
    assert one.style_seed == other_scene.style_seed != other_script.style_seed


def test_a_dialogue_by_an_unknown_character_is_refused() -> None:
    bad = {**SCENE, "audios": [{"type": "dialogue", "character": "누구", "text": "안녕"}]}
    with pytest.raises(ValueError, match="not in script_metadata.characters"):
        Scene.model_validate(bad)


# -- the chat writer ---------------------------------------------------------------------------------


@pytest.fixture
def chat() -> Iterator[ChatStub]:
    with ChatStub() as stub:
        yield stub


@pytest.fixture
def writer(chat: ChatStub, monkeypatch: pytest.MonkeyPatch) -> ChatWriter:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = PromptWriterConfig().chat.model_copy(update={"base_url": chat.base_url + "/v1", "max_retries": 2})
    clock = FakeClock()
    return ChatWriter(cfg, clock=clock, sleep=clock.sleep)


async def test_chat_writer_asks_for_schema_bound_json(chat: ChatStub, writer: ChatWriter) -> None:
    chat.answers["긴 머리"] = "a long-haired student in a rainy cafe, warm light"
    written = await writer.scene_prompt(Scene.model_validate(SCENE))
    assert written.text == "a long-haired student in a rainy cafe, warm light"
    assert written.writer == "chat:gpt-4o-mini"
    sent = chat.requests[-1].json()
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["prompt"]
    assert json.loads(sent["messages"][1]["content"])["scene_id"] == 3


async def test_chat_translation_skips_the_call_for_english(chat: ChatStub, writer: ChatWriter) -> None:
    assert (await writer.translate("a cozy desk")).text == "a cozy desk"
    assert chat.requests == []
    chat.answers["아늑한"] = "a cozy desk"
    assert (await writer.translate("아늑한 책상")).text == "a cozy desk"


async def test_an_invalid_answer_is_asked_again_once_saying_why(chat: ChatStub, writer: ChatWriter) -> None:
    chat.bad_answers = 1
    written = await writer.article_prompt("[이미지 설명: AI 로봇]")
    assert not has_hangul(written.text)
    assert len(chat.requests) == 2
    retry = chat.requests[1].json()["messages"]
    assert retry[-1]["role"] == "user" and "invalid" in retry[-1]["content"] and "Korean" in retry[-1]["content"]


async def test_two_invalid_answers_raise_and_the_fallback_writes_from_templates(
    chat: ChatStub, writer: ChatWriter
) -> None:
    chat.bad_answers = 2
    with pytest.raises(UpstreamError) as caught:
        await writer.article_prompt("AI 로봇")
    assert caught.value.error_code == "WRITER_INVALID_OUTPUT"
    chat.bad_answers = 2
    written = await WriterChain(TemplateWriter(), writer).article_prompt("AI 로봇 쿼카")
    assert written.text == "AI robot" and written.writer == "template" and written.untranslated == ["쿼카"]
    assert written.fallback_reason and "WRITER_INVALID_OUTPUT" in written.fallback_reason


async def test_a_refusal_is_an_upstream_rejection(chat: ChatStub, writer: ChatWriter) -> None:
    chat.refuse = True
    with pytest.raises(UpstreamError) as caught:
        await writer.article_prompt("a robot")
    assert caught.value.error_code == "UPSTREAM_REJECTED" and "refused" in caught.value.message


async def test_rate_limits_are_retried(chat: ChatStub, writer: ChatWriter) -> None:
    chat.add_rule("rate_limit", times=1, retry_after="2")
    assert (await writer.article_prompt("a robot")).text.startswith("stub prompt")
    assert len(chat.requests) == 2


async def test_missing_and_rejected_keys_are_configuration_errors(
    chat: ChatStub, writer: ChatWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(ConfigurationError) as caught:
        await writer.article_prompt("a robot")
    assert caught.value.error_code == "BACKEND_AUTH_FAILED" and "OPENAI_API_KEY" in caught.value.message
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigurationError) as caught:
        await writer.article_prompt("a robot")
    assert caught.value.error_code == "WRITER_NOT_CONFIGURED"


def test_build_writer_follows_the_config() -> None:
    async def translate(text: str) -> str:
        return "english"

    template = build_writer(PromptWriterConfig())
    assert isinstance(template, WriterChain) and template.chat is None and template.machine is None
    chained = build_writer(PromptWriterConfig(provider="chat"), translate, "tiny")
    assert isinstance(chained, WriterChain) and isinstance(chained.chat, ChatWriter)
    assert chained.machine is not None and chained.machine.machine is not None
    assert chained.machine.machine.name == "translator:tiny"
    off = build_writer(PromptWriterConfig(machine_translation=False), translate, "tiny")
    assert isinstance(off, WriterChain) and off.machine is None
    alone = build_writer(PromptWriterConfig(provider="chat", fallback_to_template=False), translate, "tiny")
    assert isinstance(alone, ChatWriter)
