"""A tiny MarianMT Korean -> English translator built offline (random weights, fixed seed).

Like the other tiny models (tiny.py, tiny_vision.py) it is saved with `save_pretrained` and loaded
back by the engine with `from_pretrained(folder)`, the path a hub id such as
Helsinki-NLP/opus-mt-ko-en takes. Its two SentencePiece vocabularies are trained here, offline and
deterministically (one thread, BPE):

- source (Korean): the glossary's Korean words and the Korean of the app's examples, with byte
  fallback, so every Hangul syllable (even one never seen, 쿼카) gets its own ids;
- target (English): the glossary's English and the other tiny models' desk words. The decoder's
  vocabulary has English pieces only and no byte pieces, so the random model can never write
  Hangul; it writes random English words.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

from serve_app.models.cache import build_atomically

TINY_MARIAN_DIR = "tiny-marian"
SEED = 0
HIDDEN = 32
MAX_POSITIONS = 128
SOURCE_VOCAB = 600
TARGET_VOCAB = 400
# </s> 0 and <unk> 1 as in the opus-mt vocabularies; <pad> 2 (opus-mt puts it last): the same id in
# both vocabularies, so the tokenizer skips it when decoding either side.
SPECIALS = ("</s>", "<unk>", "<pad>")

# Korean text of the app's own examples (the seeds' scenes, alt texts and instructions), so the
# source vocabulary has whole pieces for common words and endings.
KOREAN_LINES: tuple[str, ...] = (
    "따뜻한 나무 책상 위에 노트북과 모니터가 놓여 있다",
    "비 오는 저녁, 작은 카페 창가에 앉은 두 사람",
    "아늑한 미니멀 책상에 스탠드 조명과 화분",
    "조명을 더 따뜻하게 바꿔 주세요",
    "소파를 초록색 벨벳으로 바꿔 주세요",
    "이미지 설명: 미래적인 도시의 AI 로봇",
    "긴 머리의 여학생이 웃으면서 인사한다",
    "네이비 패딩 점퍼의 퀼팅 나일론 원단",
)


def _korean_corpus() -> Iterator[str]:
    from serve_app.writing.glossary import load_glossary

    glossary = load_glossary()
    words = sorted(glossary.words)
    for _ in range(4):
        yield from KOREAN_LINES
        for start in range(0, len(words), 8):
            yield " ".join(words[start : start + 8])
        yield " ".join(sorted(set(glossary.suffixes)))


def _english_corpus() -> Iterator[str]:
    from serve_app.models.tiny_vision import BLIP_WORDS
    from serve_app.models.tokenizer import DESK_WORDS
    from serve_app.writing.glossary import load_glossary

    english = sorted(set(load_glossary().words.values()))
    for _ in range(4):
        yield " ".join(english)
        yield " ".join(DESK_WORDS)
        yield " ".join(BLIP_WORDS)


def train_spm(lines: Iterator[str], vocab_size: int, *, byte_fallback: bool) -> bytes:
    """A SentencePiece BPE model trained on `lines` (deterministic: one thread, fixed order)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines if line.strip()]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=byte_fallback,
        num_threads=1,
        hard_vocab_limit=False,
        unk_id=1,
        bos_id=-1,
        eos_id=0,
        pad_id=-1,
        unk_piece="<unk>",
        eos_piece="</s>",
        minloglevel=2,
    )
    return model.getvalue()


def _pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _vocab(pieces: list[str]) -> dict[str, int]:
    """</s> 0, <unk> 1, <pad> 2, then the pieces."""
    tokens = [*SPECIALS, *(p for p in pieces if p not in SPECIALS)]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def _build_tiny_marian(folder: Path) -> None:
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    # 1. Two vocabularies (separate, so the decoder only knows English pieces).
    source_model = train_spm(_korean_corpus(), SOURCE_VOCAB, byte_fallback=True)
    target_model = train_spm(_english_corpus(), TARGET_VOCAB, byte_fallback=False)
    (folder / "source.spm").write_bytes(source_model)
    (folder / "target.spm").write_bytes(target_model)
    source_vocab, target_vocab = _vocab(_pieces(source_model)), _vocab(_pieces(target_model))
    (folder / "vocab.json").write_text(json.dumps(source_vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "target_vocab.json").write_text(json.dumps(target_vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
        target_vocab_file=str(folder / "target_vocab.json"),
        separate_vocabs=True,
        source_lang="ko",
        target_lang="en",
        model_max_length=MAX_POSITIONS,
    )
    # 2. The model: opus-mt's shape at toy size; decoding starts at <pad>, as in opus-mt.
    pad = SPECIALS.index("<pad>")
    config = MarianConfig(
        vocab_size=len(source_vocab),
        decoder_vocab_size=len(target_vocab),
        share_encoder_decoder_embeddings=False,
        d_model=HIDDEN,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * HIDDEN,
        decoder_ffn_dim=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
        scale_embedding=True,  # as opus-mt
        init_std=0.1,  # larger random weights than 0.02: the output depends more on the input
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MarianMTModel(config).eval()
    model.generation_config.no_repeat_ngram_size = 2  # random weights repeat one piece otherwise
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def ensure_tiny_marian(cache_dir: Path) -> Path:
    """The folder of the tiny Korean -> English Marian under `cache_dir`, built on first use."""
    return build_atomically(Path(cache_dir) / TINY_MARIAN_DIR, _build_tiny_marian)
