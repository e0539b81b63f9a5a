"""Desk item extraction from captions and user text (configs/desk_items.yaml)."""

from __future__ import annotations

import pytest

from serve_app.items import ItemVocabulary, extract_items, fallback_items, load_item_vocabulary


@pytest.fixture(scope="module")
def vocab() -> ItemVocabulary:
    return load_item_vocabulary()


def names(caption: str, user_text: str, vocab: ItemVocabulary, **kwargs: int) -> list[str]:
    return [item.name for item in extract_items(caption, user_text, vocab, **kwargs)]


def test_vocabulary_is_cached_and_complete(vocab: ItemVocabulary) -> None:
    assert load_item_vocabulary() is vocab
    assert {"마우스", "키보드", "모니터", "모니터암"} <= {item.name for item in vocab.items}


def test_english_synonyms_plurals_and_case(vocab: ItemVocabulary) -> None:
    assert names("A desk with two MONITORS, a Keyboard and a trackball", "", vocab) == [
        "책상",
        "모니터",
        "키보드",
        "마우스",
    ]
    assert names("speakers and headphones", "", vocab) == ["스피커", "헤드셋"]


def test_whole_words_only(vocab: ItemVocabulary) -> None:
    # "mousetrap" is not a mouse, "deskside" not a desk, "micro" not a mic.
    assert names("a mousetrap by the deskside, micro", "", vocab) == []


def test_items_carry_english_name_and_query(vocab: ItemVocabulary) -> None:
    [item] = extract_items("a mouse", "", vocab)
    assert (item.name, item.english, item.query) == ("마우스", "mouse", "무선 마우스")


def test_phrase_beats_its_sub_words(vocab: ItemVocabulary) -> None:
    assert names("a monitor arm holding the screen", "", vocab) == ["모니터암", "모니터"]
    assert names("a monitor arm", "", vocab) == ["모니터암"]
    assert names("a mouse pad", "", vocab) == ["장패드"]
    assert names("a desk lamp", "", vocab) == ["데스크 램프"]
    # ...but the sub-word on its own elsewhere still counts.
    assert names("a mouse pad and a mouse", "", vocab) == ["장패드", "마우스"]


def test_korean_synonyms_with_particles(vocab: ItemVocabulary) -> None:
    assert names("", "흰색 키보드랑 마우스를 추천해 주세요", vocab) == ["키보드", "마우스"]
    assert names("", "모니터암이 필요해요", vocab) == ["모니터암"]
    assert names("", "마우스패드", vocab) == ["장패드"]
    assert names("", "노트북 거치대 위의 노트북", vocab) == ["노트북 거치대", "노트북"]


def test_english_word_followed_by_korean_particle(vocab: ItemVocabulary) -> None:
    assert names("", "keyboard가 좋아요", vocab) == ["키보드"]


def test_dedupe_and_first_appearance_order(vocab: ItemVocabulary) -> None:
    caption = "a keyboard, a mouse, another keyboard and a display"
    assert names(caption, "", vocab) == ["키보드", "마우스", "모니터"]


def test_user_text_contributes_after_caption(vocab: ItemVocabulary) -> None:
    assert names("a keyboard on a table", "add a plant and a new keyboard", vocab) == ["키보드", "책상", "화분"]
    assert names("", "a webcam please", vocab) == ["웹캠"]


def test_max_items(vocab: ItemVocabulary) -> None:
    text = "mouse keyboard monitor lamp speaker headset laptop chair plant webcam"
    assert len(extract_items(text, "", vocab)) == 8
    assert names(text, "", vocab, max_items=2) == ["마우스", "키보드"]


def test_colour_enriches_query(vocab: ItemVocabulary) -> None:
    items = extract_items("a white keyboard and a mouse", "블랙 마우스", vocab)
    assert [item.query for item in items] == ["화이트 기계식 키보드", "무선 마우스"]
    assert extract_items("", "블랙 마우스", vocab)[0].query == "블랙 무선 마우스"


def test_nothing_found(vocab: ItemVocabulary) -> None:
    assert extract_items("a cat sleeping on a sofa", "", vocab) == []
    assert extract_items("", "", vocab) == []


def test_default_vocabulary() -> None:
    assert [item.name for item in extract_items("a mouse")] == ["마우스"]


def test_fallback_items(vocab: ItemVocabulary) -> None:
    items = fallback_items(vocab)
    assert [item.name for item in items] == vocab.fallback_items == ["마우스", "키보드", "데스크 램프"]
    assert all(item.query and item.english for item in items)


def test_fallback_skips_unknown_names() -> None:
    custom = ItemVocabulary.model_validate(
        {
            "items": [{"name": "마우스", "english": "mouse", "query": "마우스", "synonyms": ["mouse"]}],
            "fallback_items": ["없는것", "마우스"],
        }
    )
    assert [item.name for item in fallback_items(custom)] == ["마우스"]
