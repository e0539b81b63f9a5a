"""Korean -> English by machine translation: the Marian engine on the tiny random-weight model, the
Translator deployment's shell, and the writer chain's order (the glossary, the chat writer when
configured, then the Translator) with each writer's failure falling through to the next.

The tiny model's English is random words: these tests check the flow (who is called with what,
whose answer is used, what is recorded) and determinism, never meaning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.errors import AppError
from serve_app.models.translation import TranslationEngine
from serve_app.presets import load_preset
from serve_app.products.scenes.payload import Scene
from serve_app.retry import RetryConfig
from serve_app.writing import TemplateWriter, WriterChain, build_writer
from serve_app.writing.chat import ChatWriter
from serve_app.writing.config import PromptWriterConfig
from serve_app.writing.glossary import has_hangul
from serve_app.writing.machine import MachineTranslator
from testbed.stubs.chat_stub import KEY, ChatStub
from testbed.stubs.fake_clock import FakeClock
from tests.support.bodies import scene_body

UNKNOWN = "쿼카가 있는 아늑한 책상"  # 쿼카 (quokka) is not in the glossary


# -- the engine on the tiny model ----------------------------------------------------------------------


def test_the_tiny_marian_writes_english_words_for_korean_deterministically(tiny_translator: TranslationEngine) -> None:
    texts = [UNKNOWN, "비 오는 저녁 카페", "소파를 초록색 벨벳으로 바꿔 주세요"]
    first = tiny_translator.translate(texts)
    assert len(first) == 3
    for english in first:
        assert english and not has_hangul(english) and english == " ".join(english.split())
    assert tiny_translator.translate(texts) == first  # greedy decoding, fixed weights
    assert tiny_translator.translate(texts[:1]) == first[:1]  # padding in a batch changes nothing
    assert tiny_translator.translate([]) == []


def test_a_text_longer_than_the_model_reads_is_truncated_not_refused(tiny_translator: TranslationEngine) -> None:
    (english,) = tiny_translator.translate(["쿼카 " * 500])
    assert english and not has_hangul(english)


def test_the_tiny_decoder_has_no_piece_that_could_write_hangul(tiny_translator: TranslationEngine) -> None:
    """The random model cannot answer Korean: its target vocabulary is English pieces, no byte pieces."""
    tokenizer = tiny_translator.tokenizer
    pieces = list(tokenizer.target_encoder)
    assert len(pieces) > 100
    assert not [piece for piece in pieces if has_hangul(piece) or piece.startswith("<0x")]
    assert any(has_hangul(piece) for piece in tokenizer.encoder)  # the source side does read Korean


def test_the_tiny_marian_builds_the_same_files_every_time(tiny_translator: TranslationEngine, tmp_path: Path) -> None:
    """SentencePiece is trained offline on one thread from fixed text, the weights from a fixed seed:
    every replica and machine builds the same model."""
    import hashlib

    from serve_app.models.tiny_marian import TINY_MARIAN_DIR, ensure_tiny_marian

    def digests(folder: Path) -> dict[str, str]:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    built = ensure_tiny_marian(tmp_path)
    assert built == tmp_path / TINY_MARIAN_DIR
    assert {"source.spm", "target.spm", "vocab.json", "target_vocab.json", "model.safetensors"} <= set(digests(built))
    assert digests(built) == digests(Path(tiny_translator.tokenizer.name_or_path))


def test_the_translator_deployment_batches_through_its_engine(tiny_cache_dir: Path) -> None:
    from deployments.translator import Translator

    shell = Translator.func_or_class(load_preset("tiny"), str(tiny_cache_dir))
    shell.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.01})
    assert shell.info() | {"device": "?"} == {
        "model_id": "tiny",
        "device": "?",
        "dtype": "float32",
        "max_new_tokens": 16,
        "num_beams": 1,
        "max_batch_size": 4,
        "batch_wait_timeout_s": 0.01,
    }
    texts = [UNKNOWN, "비 오는 저녁"]
    batch = asyncio.run(Translator.func_or_class._translate_batch.__wrapped__(shell, texts))
    assert batch == shell.engine.translate(texts)


# -- the writer chain ----------------------------------------------------------------------------------


class Translations:
    """The Translator deployment's call, scripted: an answer, an error, or the tiny engine's English."""

    def __init__(self, engine: TranslationEngine | None = None) -> None:
        self.engine = engine
        self.calls: list[str] = []
        self.answer: str | None = None
        self.error: BaseException | None = None
        self.errors_left = 0

    async def __call__(self, text: str) -> str:
        self.calls.append(text)
        if self.error is not None and self.errors_left != 0:
            self.errors_left -= 1
            raise self.error
        if self.answer is not None:
            return self.answer
        assert self.engine is not None
        return (await asyncio.to_thread(self.engine.translate, [text]))[0]


@pytest.fixture
def translations(tiny_translator: TranslationEngine) -> Translations:
    return Translations(tiny_translator)


def chain(translations: Translations, chat: ChatWriter | None = None) -> WriterChain:
    machine = MachineTranslator(translations, "tiny", RetryConfig(max_attempts=3, base_delay_s=0.01))
    return WriterChain(TemplateWriter(), chat, machine)


async def test_the_glossary_answers_alone_when_it_knows_every_word(translations: Translations) -> None:
    written = await chain(translations).translate("아늑한 나무 책상, 따뜻한 햇살")
    assert written.text == "cozy wood desk, warm sunlight" and written.writer == "template"
    assert translations.calls == [] and written.record() == {"writer": "template"}


async def test_a_word_outside_the_glossary_goes_to_the_translator_whose_english_is_used(
    translations: Translations, tiny_translator: TranslationEngine
) -> None:
    written = await chain(translations).translate(UNKNOWN)
    assert translations.calls == [UNKNOWN]  # the whole piece, so the model sees the word in context
    assert written.text == tiny_translator.translate([UNKNOWN])[0]
    assert written.writer == "translator:tiny" and written.machine_translated and written.untranslated == []
    assert written.translate_s >= 0 and written.fallback_reason is None
    assert written.record() == {"writer": "translator:tiny", "machine_translated": True}
    again = await chain(translations).translate(UNKNOWN)
    assert again.text == written.text  # deterministic


async def test_only_the_scene_pieces_the_glossary_cannot_write_go_to_the_translator(
    translations: Translations,
) -> None:
    body = scene_body(7)
    body["audios"][0] = {**body["audios"][0], "text": "쿼카가 뛰노는 공원"}
    scene = Scene.model_validate(body)
    translations.answer = "a quokka playing in a park"
    written = await chain(translations).scene_prompt(scene)
    assert translations.calls == ["쿼카가 뛰노는 공원"]
    assert "a quokka playing in a park" in written.text and "a woman (long" in written.text
    assert written.machine_translated and not has_hangul(written.text)


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        ("쿼카 a desk", None, "TRANSLATION_KOREAN"),  # random weights answering Korean is a failure
        ("   ", None, "TRANSLATION_EMPTY"),
        (None, RuntimeError("CUDA error"), "TRANSLATION_FAILED"),
        (None, AppError("model not loaded", error_code="MODEL_NOT_READY"), "MODEL_NOT_READY"),
    ],
)
async def test_a_translator_failure_falls_through_to_the_glossarys_words(
    translations: Translations, answer: str | None, error: BaseException | None, code: str
) -> None:
    translations.answer, translations.error, translations.errors_left = answer, error, -1
    written = await chain(translations).article_prompt(f"[이미지 설명: {UNKNOWN}]")
    assert written.text == "cozy desk" and written.untranslated == ["쿼카가"]
    assert written.writer == "template" and not written.machine_translated
    assert written.fallback_reason and code in written.fallback_reason and "translator:tiny" in written.fallback_reason


async def test_a_dead_translator_replica_is_retried() -> None:
    from ray.serve.exceptions import BackPressureError

    translations = Translations()
    translations.answer = "a quokka"
    translations.error, translations.errors_left = BackPressureError(num_queued_requests=1, max_queued_requests=1), 2
    machine = MachineTranslator(translations, "tiny", RetryConfig(max_attempts=3, base_delay_s=0.01))
    assert (await machine.translate("쿼카"))[0] == "a quokka"
    assert translations.calls == ["쿼카"] * 3


async def test_when_every_writer_fails_nothing_may_be_left(
    translations: Translations,
) -> None:
    translations.answer = ""
    written = await chain(translations).article_prompt("쿼카")
    assert written.text == "" and written.untranslated == ["쿼카"]
    assert "TRANSLATION_EMPTY" in (written.fallback_reason or "")


# -- with a chat writer: chat, then the glossary, then the translator --------------------------------------


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ChatStub, ChatWriter]]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatStub() as stub:
        cfg = PromptWriterConfig().chat.model_copy(update={"base_url": stub.base_url + "/v1", "max_retries": 0})
        clock = FakeClock()
        yield stub, ChatWriter(cfg, clock=clock, sleep=clock.sleep)


async def test_a_configured_chat_writer_writes_first_and_the_translator_is_not_called(
    translations: Translations, chat: tuple[ChatStub, ChatWriter]
) -> None:
    stub, writer = chat
    writers = chain(translations, writer)
    stub.answers["아늑한 책상을"] = "a cozy desk by a window, morning light"
    written = await writers.translate("아늑한 책상을")
    assert written.writer == "chat:gpt-4o-mini" and len(stub.requests) == 1, "chat writes even what the glossary knows"
    stub.answers["쿼카"] = "a quokka beside a cozy desk"
    written = await writers.translate(UNKNOWN)
    assert written.text == "a quokka beside a cozy desk" and written.writer == "chat:gpt-4o-mini"
    assert len(stub.requests) == 2 and translations.calls == [] and written.fallback_reason is None


async def test_when_the_chat_writer_fails_the_glossary_answers_what_it_knows(
    translations: Translations, chat: tuple[ChatStub, ChatWriter]
) -> None:
    stub, writer = chat
    stub.refuse = True
    written = await chain(translations, writer).translate("아늑한 책상")
    assert written.writer == "template" and written.text and translations.calls == []
    assert written.fallback_reason and "chat:gpt-4o-mini: UPSTREAM_REJECTED" in written.fallback_reason


async def test_when_the_chat_writer_fails_the_translator_writes_and_the_result_says_why(
    translations: Translations, chat: tuple[ChatStub, ChatWriter]
) -> None:
    stub, writer = chat
    stub.refuse = True
    written = await chain(translations, writer).article_prompt(UNKNOWN)
    assert translations.calls == [UNKNOWN] and written.writer == "translator:tiny" and written.machine_translated
    assert written.fallback_reason and "chat:gpt-4o-mini: UPSTREAM_REJECTED" in written.fallback_reason
    stub.refuse = False
    translations.answer = "쿼카"
    stub.bad_answers = 2
    last = await chain(translations, writer).edit_prompt(UNKNOWN)
    reasons = last.fallback_reason or ""
    assert "WRITER_INVALID_OUTPUT" in reasons and "TRANSLATION_KOREAN" in reasons and last.untranslated == ["쿼카가"]


def test_the_runner_builds_the_chain_over_the_translator_handle() -> None:
    async def translate(text: str) -> str:
        return "english"

    writer = build_writer(PromptWriterConfig(), translate, "Helsinki-NLP/opus-mt-ko-en")
    assert isinstance(writer, WriterChain) and writer.machine is not None
    assert writer.machine.machine is not None and writer.machine.machine.name == "translator:Helsinki-NLP/opus-mt-ko-en"
