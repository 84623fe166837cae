"""Deterministic tokenizer training: the `tokenizers` trainers give different vocabularies from run to run.

- WordPiece (BPE trainer): continuing-subword tokens (`##e`) get their ids in hash-map iteration order, and
  merge ties are broken by those ids, so equal data gives different merges (huggingface/tokenizers#1794,
  fix proposed in #2066). Giving the trainer every `##c` up front, in sorted order, as special tokens fixes
  their ids, and with them every tie-break.
- Unigram: sentences are summed in hash-map order, so scores differ in their last bits (1e-15) between runs,
  and the required characters are appended in hash-set order. Scores rounded to 1e-8 (far below any
  difference that changes a segmentation) and an order by (score, piece) remove both.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


def continuing_subwords(tokenizer: Tokenizer, corpus: list[Path], prefix: str = "##") -> list[str]:
    """Sorted `##c` for every character c found after the first position of a pre-tokenized word."""
    chars: set[str] = set()
    for path in corpus:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                text = tokenizer.normalizer.normalize_str(line) if tokenizer.normalizer else line
                for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text):
                    chars.update(word[1:])
    return [prefix + c for c in sorted(chars)]


SCORE_DECIMALS = 8


def sorted_unigram_vocab(vocab: list[tuple[str, float]], n_special: int) -> list[tuple[str, float]]:
    """The trained pieces in a canonical order: specials first as given, then by rounded score (desc), piece."""
    pieces = [(piece, round(score, SCORE_DECIMALS)) for piece, score in vocab[n_special:]]
    return vocab[:n_special] + sorted(pieces, key=lambda item: (-item[1], item[0]))
