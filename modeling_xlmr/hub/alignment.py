"""Token features -> word features, fairseq's `align_features_to_words` without spaCy.

Words are regex words (runs of letters/digits, and each punctuation mark on its own), found with their
character spans; the tokenizer's offsets say which words each token overlaps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # letters/digits runs, and each punctuation mark on its own


@dataclass
class WordFeatures:
    """Word-level features: row 0 is `<s>`, then one row per word, then `</s>` (fairseq's layout).

    `features` is (words + 2, hidden), or a list of those (one per layer) for `return_all_hiddens`.
    `spans` are character offsets into the sentence (None for `<s>`/`</s>`).
    """

    words: list[str]
    spans: list[tuple[int, int] | None]
    features: torch.Tensor | list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.words)


def words_with_spans(sentence: str) -> list[tuple[str, tuple[int, int]]]:
    return [(match.group(), match.span()) for match in WORD_PATTERN.finditer(sentence)]


def word_alignment_matrix(
    token_offsets: Sequence[tuple[int, int]], word_spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """(words + 2, tokens + 2) weights mapping token features (with `<s>`/`</s>`) to word rows.

    A token overlapping several words is shared evenly between them (fairseq's
    `align_features_to_words`); a token covering no word character (a lone '▁') goes to the next
    word (or the last one), so every token's features land in exactly one row sum.
    """
    num_tokens, num_words = len(token_offsets), len(word_spans)
    matrix = torch.zeros((num_words + 2, num_tokens + 2))
    matrix[0, 0] = 1.0  # <s>
    matrix[-1, -1] = 1.0  # </s>
    for token, (start, end) in enumerate(token_offsets):
        overlapping = [w for w, (w_start, w_end) in enumerate(word_spans) if start < w_end and w_start < end]
        if not overlapping and num_words:
            following = [w for w, (w_start, _) in enumerate(word_spans) if w_start >= end]
            overlapping = [following[0] if following else num_words - 1]
        for word in overlapping:
            matrix[1 + word, 1 + token] = 1.0 / len(overlapping)
    return matrix


__all__ = ["WORD_PATTERN", "WordFeatures", "word_alignment_matrix", "words_with_spans"]
