"""A small CLIP BPE tokenizer trained offline, so the tiny models need no download.

The corpus is English text that ships with Python (the `pydoc` help topics and the Zen of Python)
plus a fixed list of desk words, so prompts like "a cozy wooden desk with a monitor" split into
whole words. Training is deterministic: the same Python gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
DEFAULT_VOCAB_SIZE = 4096

# Words the app's prompts use; repeated in the corpus so each becomes a single token.
DESK_WORDS: tuple[str, ...] = (
    "a photo of desk setup computer monitor keyboard mouse pad lamp plant chair laptop speaker "
    "headphones webcam microphone cable shelf drawer mug cup notebook pen tablet phone stand dock "
    "wooden wood oak walnut white black grey gray dark light warm cozy minimal minimalist modern "
    "clean tidy neon led pastel studio soft style aesthetic home office workspace gaming room wall "
    "window sunlight natural bright high quality detailed realistic render interior design with and "
    "the on in an blurry low ugly deformed watermark text cozywood neonmin pastelstudio landscape "
    "person food animal street"
).split()


def _corpus() -> Iterator[str]:
    """English text shipped with Python, then the desk vocabulary (in a fixed order)."""
    import ast
    import codecs
    import importlib.util
    from pydoc_data.topics import topics

    # The Zen of Python, read from this.py without importing it (importing prints it).
    spec = importlib.util.find_spec("this")
    if spec is not None and spec.origin:
        module = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in module.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "s" for t in node.targets):
                yield codecs.decode(ast.literal_eval(node.value), "rot13")
    for key in sorted(topics):
        yield topics[key]
    for _ in range(200):
        yield " ".join(DESK_WORDS)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def train_clip_bpe(vocab_size: int = DEFAULT_VOCAB_SIZE) -> tuple[dict[str, int], list[str]]:
    """Train byte-level BPE with CLIP's normalizer/pre-tokenizer; return (vocab, merges) in CLIP's layout.

    CLIP's layout: the 256 byte characters, the same with `</w>`, one token per merge, then the
    start/end tokens. Ids therefore depend only on the merge order, which the trainer fixes.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    # 1. A tokenizer with CLIP's text pipeline (same as transformers' CLIPTokenizer).
    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
                ),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # 2. Train. The `</w>` symbols are passed as special tokens only so that their ids are fixed
    #    before training: otherwise the trainer numbers them in hash-map order and breaks ties
    #    between equally frequent pairs differently on every run.
    base = list(_bytes_to_unicode().values())
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=base,
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        special_tokens=[b + "</w>" for b in base],
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    trained = json.loads(tok.to_str())["model"]["merges"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in trained]
    # 3. CLIP's vocab layout.
    tokens = base + [b + "</w>" for b in base]
    seen = set(tokens)
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in seen:
            seen.add(merged)
            tokens.append(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tiny_clip_tokenizer(out_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> CLIPTokenizer:
    """Train (deterministically) a small CLIP tokenizer, save it to `out_dir` and return it.

    `out_dir` gets vocab.json, merges.txt and the transformers files, so
    `CLIPTokenizer.from_pretrained(out_dir)` loads it. Files are written to a temporary folder
    and moved in one by one with `os.replace`, so concurrent builders never leave a torn file
    (every builder writes the same bytes).
    """
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_clip_bpe(vocab_size)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(
            vocab=vocab,
            merges=[tuple(m.split(" ")) for m in merges],
            model_max_length=MODEL_MAX_LENGTH,
            pad_token=EOS_TOKEN,
        )
        tokenizer.save_pretrained(tmp_dir)
        for item in sorted(tmp_dir.iterdir()):
            if item.is_file():
                os.replace(item, out_dir / item.name)
            else:  # pragma: no cover - save_pretrained writes only files
                shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
    return CLIPTokenizer.from_pretrained(out_dir)
