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
from itertools import accumulate, pairwise

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

    def word_ids(self, ids: Sequence[int]) -> list[int]:
        """The word of each piece: a new word starts at every piece beginning with "▁" (Metaspace's split)."""
        return [count - 1 for count in accumulate(map(self.starts_word.__getitem__, ids))]


class NativeRow:
    """A row's per-token attributes from sentencepiece's pieces, as transformers reads them from a `tokenizers`
    `Encoding`: offsets, word ids, sequence ids, tokens and the special-tokens mask, each made when first read.

    `sequences` holds each text's (ids, spans, word ids) as the row keeps them (already truncated); the row is
    `<s> A </s>` / `<s> A </s></s> B </s>` (fairseq's template) or `A` / `A B` without special tokens, then padded
    with `padding = (count, direction, pad token)`."""

    def __init__(self, sequences, add_special_tokens: bool, truncated: bool, token_strings, padding=(0, "right", "")):
        self.sequences, self.add_special_tokens, self.truncated = sequences, add_special_tokens, truncated
        self._token_strings, self._padding = token_strings, padding

    @classmethod
    def assemble(
        cls,
        sequences: list[tuple[list[int], list[tuple[int, int]], list[int | None]]],
        kept: int,
        truncation_side: str,
        add_special_tokens: bool,
        token_strings: list[str],
        padding: tuple[int, str, str] = (0, "right", ""),
    ) -> NativeRow:
        """`kept`: how many of a single text's pieces the row keeps (pairs are never cut here)."""
        truncated = len(sequences) == 1 and kept < len(sequences[0][0])
        if truncated:
            window = slice(0, kept) if truncation_side == "right" else slice(len(sequences[0][0]) - kept, None)
            sequences = [tuple(values[window] for values in sequences[0])]
        return cls(sequences, add_special_tokens, truncated, token_strings, padding)

    def _layout(self, values: list[list], special, pad) -> list:
        """Each sequence's values with `special` at its template positions, then the padding."""
        row = []
        for sequence_values in values:
            row += [special, *sequence_values, special] if self.add_special_tokens else sequence_values
        missing, direction, _ = self._padding
        if missing > 0:
            row = [pad] * missing + row if direction == "left" else row + [pad] * missing
        return row

    @functools.cached_property
    def offsets(self) -> list[tuple[int, int]]:
        return self._layout([spans for _, spans, _ in self.sequences], (0, 0), (0, 0))

    @functools.cached_property
    def word_ids(self) -> list[int | None]:
        return self._layout([words for _, _, words in self.sequences], None, None)

    @functools.cached_property
    def sequence_ids(self) -> list[int | None]:
        return self._layout([[index] * len(ids) for index, (ids, _, _) in enumerate(self.sequences)], None, None)

    @functools.cached_property
    def special_tokens_mask(self) -> list[int]:
        return self._layout([[0] * len(ids) for ids, _, _ in self.sequences], 1, 1)

    @functools.cached_property
    def tokens(self) -> list[str]:
        strings = self._token_strings  # fairseq's ids: <s> is 0, </s> is 2
        row = self._layout([[strings[i] for i in ids] for ids, _, _ in self.sequences], strings[2], self._padding[2])
        if self.add_special_tokens:  # </s> closes each text and opens the second; <s> opens the row
            missing, direction, _ = self._padding
            row[missing if direction == "left" and missing > 0 else 0] = strings[0]
        return row


__all__ = ["NativeRow", "PieceSpans"]
