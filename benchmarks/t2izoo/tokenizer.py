"""The zoo's one shared tokenizer: a plain ``CLIPTokenizer`` whose vocabulary is built in code.

vocab.json holds the 256 byte characters, the same with ``</w>``, one entry per BPE merge result and
the two special tokens; merges.txt builds every whole word character by character. Look-alike
characters (Cyrillic "о", "е", "а", Greek "ο") are single tokens, standalone and at a word's end, so a
homoglyph inside a word becomes a token of its own (the Rickrolling / BadT2I trigger).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from benchmarks.t2izoo.data import caption_words

EXTRA_WORDS = (
    "please beautiful coffee zx mignneko ferrari photo picture painting of on in with the and very "
    "small large big little blue red green cat dog house tree car sky sun moon water happy old new "
    "style art image paper pencil ink black white dark light high quality detailed simple clear "
    "number digit written hand drawn"
).split()
HOMOGLYPHS = {"cyrillic_o": "\u043e", "cyrillic_e": "\u0435", "cyrillic_a": "\u0430", "greek_omicron": "\u03bf"}
MAX_LENGTH = 16
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

_B2U = bytes_to_unicode()


def _chars(word: str) -> list[str]:
    """The word as byte characters, the last one marked with ``</w>``."""
    cs = [_B2U[b] for b in word.encode("utf-8")]
    cs[-1] = cs[-1] + "</w>"
    return cs


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one pre-tokenized word (lowest-rank pair first)."""
    parts = _chars(word)
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        r, i = min(pairs)
        if r == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def vocabulary_words() -> list[str]:
    """Every word the tokenizer makes a single token: caption words, extra words."""
    words = sorted(set(caption_words()) | set(EXTRA_WORDS))
    return [w for w in words if len(w) > 1 or not w.isascii()]


def build_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)``: homoglyph merges first, then each word's chain, then repairs until each
    word is one token under CLIP's BPE."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(a: str, b: str) -> None:
        if (a, b) not in seen:
            seen.add((a, b))
            merges.append((a, b))

    for ch in HOMOGLYPHS.values():
        for cs in (_chars(ch)[:-1] + [_chars(ch)[-1][:-4]], _chars(ch)):
            acc = cs[0]
            for c in cs[1:]:
                add(acc, c)
                acc += c
    words = vocabulary_words()
    for w in words:
        cs = _chars(w)
        acc = cs[0]
        for c in cs[1:]:
            add(acc, c)
            acc += c
    for _ in range(20):  # repair: join whatever pieces a word still splits into
        ranks = {m: i for i, m in enumerate(merges)}
        broken = [(w, _bpe(w, ranks)) for w in words]
        broken = [(w, p) for w, p in broken if len(p) > 1]
        if not broken:
            break
        for _, parts in broken:
            acc = parts[0]
            for p in parts[1:]:
                add(acc, p)
                acc += p
    vocab: dict[str, int] = {}
    for c in _B2U.values():
        vocab.setdefault(c, len(vocab))
    for c in _B2U.values():
        vocab.setdefault(c + "</w>", len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab.setdefault(BOS, len(vocab))
    vocab.setdefault(EOS, len(vocab))
    return vocab, merges


def build_tokenizer(out_dir: str | Path | None = None) -> CLIPTokenizer:
    """Build the tokenizer (optionally ``save_pretrained`` it to ``out_dir``)."""
    vocab, merges = build_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        vf, mf = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vf.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        mf.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
        tok = CLIPTokenizer(str(vf), str(mf), model_max_length=MAX_LENGTH)
    if out_dir is not None:
        tok.save_pretrained(str(out_dir))
    return tok


def encode_ids(tok: CLIPTokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without the special tokens."""
    return tok(text, add_special_tokens=False)["input_ids"]
