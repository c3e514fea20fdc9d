"""Offsets, word ids and tokens of XLMRTokenizerFast's rows from sentencepiece's own pieces, without `tokenizers`.

The `tokenizers` pipeline reports a piece's span as the original characters its normalized characters are aligned
with. Wherever the normalization maps the text character for character (each character to one character, " " to
"▁", the dummy "▁" prepended, nothing removed or merged), that alignment is the identity shifted by the dummy
prefix, and a piece covering normalized characters `s .. e-1` spans original characters `max(s-1, 0) .. max(e-1, 1)`
(the dummy "▁" shares the first character's span, as `tokenizers`' `Prepend` aligns it). So for such a text the
spans follow from the lengths of sentencepiece's pieces alone.

Whether a text is such a text is checked exactly, and cheaply: sentencepiece's pieces spell its normalized text,
which must equal "▁" + the text with every character replaced by its own one-character normalization (a table
built once from sentencepiece's normalizer, per character in context "a?a"). Texts that fail (runs of spaces,
characters that expand, vanish or merge, leading or trailing whitespace, unknown pieces) are left to the
`tokenizers` pipeline, as before; those are a small minority of real text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import accumulate, chain, islice, pairwise, repeat
from operator import sub

SPACE_SYMBOL = "\u2581"
_SURROGATES = range(0xD800, 0xE000)


class PieceSpans:
    """Spans, word starts and token strings of fairseq ids, for texts whose normalization is character for character.

    `vocab` is the fairseq vocabulary (token -> id) the ids come from; `normalizer` a `SentencePieceNormalizer` of
    the same model (used once, to build the character table)."""

    def __init__(self, vocab: dict[str, int], normalizer):
        tokens = [""] * (max(vocab.values()) + 1)
        for token, token_id in vocab.items():
            tokens[token_id] = token
        self.tokens = tokens
        self.lengths = [len(token) for token in tokens]
        self.starts_word = [token.startswith(SPACE_SYMBOL) for token in tokens]
        self._normalizer = normalizer

    @functools.cached_property
    def table(self) -> dict[int, str]:
        """`str.translate` table: each BMP character whose normalization in context is one other character."""
        characters = [chr(code) for code in range(0x10000) if code not in _SURROGATES]
        normalized = self._normalizer.normalize([f"a{character}a" for character in characters])
        table = {ord(" "): SPACE_SYMBOL}
        for character, text in zip(characters, normalized):
            if len(text) == 4 and text[:2] == SPACE_SYMBOL + "a" and text[3] == "a" and text[2] != character:
                table[ord(character)] = text[2]
        return table

    def spans(self, text: str, ids: Sequence[int]) -> list[tuple[int, int]] | None:
        """The `tokenizers` span of each piece of `text` (its ids), or None if the text needs the pipeline."""
        if not ids:  # nothing left after normalization: no piece, no span
            return []
        spelled = "".join(map(self.tokens.__getitem__, ids))
        # Most text only needs " " -> "▁" (a C-speed check); the table handles e.g. fullwidth forms.
        if spelled[1:] != text.replace(" ", SPACE_SYMBOL) and spelled[1:] != text.translate(self.table):
            return None
        if spelled[:1] != SPACE_SYMBOL:
            return None
        # bounds[k] = (end of piece k-1) - 1 in normalized characters = the original index where piece k starts
        bounds = list(accumulate(map(self.lengths.__getitem__, ids), initial=-1))
        spans = list(pairwise(bounds))
        spans[0] = (0, max(bounds[1], 1))  # the dummy "▁" shares the first character's span
        return spans

    def flat_spans(self, units: Sequence[str], ids_per_unit: Sequence[Sequence[int]]) -> list | None:
        """The spans of every piece of every unit (texts, or a row's words: each encoded on its own), each relative
        to its unit, in one list; None unless every unit only needs " " -> "▁" (then `spans` decides, unit by unit).

        One string comparison checks all units at once: the pieces must spell "▁" + unit for each unit in turn, and
        split where the units do."""
        ids = list(chain.from_iterable(ids_per_unit))
        spelled = "".join(map(self.tokens.__getitem__, ids))
        if spelled != (SPACE_SYMBOL + SPACE_SYMBOL.join(units)).replace(" ", SPACE_SYMBOL):
            return None
        counts = list(map(len, ids_per_unit))
        bounds = list(accumulate(map(self.lengths.__getitem__, ids), initial=-1))
        unit_starts = list(accumulate([len(unit) + 1 for unit in units], initial=0))  # in `spelled`
        piece_starts = accumulate(counts, initial=0)
        if any(bounds[piece] != start - 1 for piece, start in zip(piece_starts, unit_starts[:-1])):
            return None  # an empty unit, or pieces that do not split where the units do
        bases = list(chain.from_iterable(map(repeat, unit_starts, counts)))
        ends = list(map(sub, islice(bounds, 1, None), bases))  # relative to its unit, in original characters
        spans = list(zip(map(sub, bounds, bases), ends))
        for first in accumulate(counts[:-1], initial=0):  # a unit's dummy "▁" shares its first character's span
            if first < len(spans):
                spans[first] = (0, ends[first] if ends[first] > 0 else 1)
        return spans

    def spans_of_each(self, units: Sequence[str], ids_per_unit: Sequence[Sequence[int]]) -> list[list | None]:
        """`spans` of each unit, all at once where `flat_spans` can."""
        flat = self.flat_spans(units, ids_per_unit)
        if flat is None:
            return [self.spans(unit, ids) for unit, ids in zip(units, ids_per_unit)]
        pieces = iter(flat)
        return [list(islice(pieces, len(ids))) for ids in ids_per_unit]

    def word_ids(self, ids: Sequence[int]) -> list[int]:
        """The word of each piece: a new word starts at every piece beginning with "▁" (Metaspace's split)."""
        return [count - 1 for count in accumulate(map(self.starts_word.__getitem__, ids))]


def words_spans(spans_of: PieceSpans, words: list[str], ids_per_word: list[list[int]]) -> list | None:
    """One text's pre-split words: spans of all its pieces (relative to each word), None if a word needs `tokenizers`."""
    flat = spans_of.flat_spans(words, ids_per_word)
    if flat is not None:
        return flat
    spans = []
    for word, ids in zip(words, ids_per_word):
        word_spans = spans_of.spans(word, ids)
        if word_spans is None:
            return None
        spans += word_spans
    return spans


def word_index_of(ids_per_word: list[list[int]]) -> list[int]:
    return [word for word, ids in enumerate(ids_per_word) for _ in ids]


__all__ = ["PieceSpans", "word_index_of", "words_spans"]
