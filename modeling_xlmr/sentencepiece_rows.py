"""The rows `XLMRTokenizerFast` returns: what transformers reads from a `tokenizers.Encoding`, made from
sentencepiece's ids and pieces (`SentencePieceEncoding`, `NativeRows`), with the `tokenizers` pipeline's own
encoding standing behind for anything else.

Remote code (saved beside models and tokenizers): imports only the standard library, numpy, `tokenizers` and the
other root modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from tokenizers import Encoding

from .sentencepiece_spans import exclusive_sum


class SentencePieceEncoding:
    """One row of a batch, standing in for a `tokenizers.Encoding`.

    `ids`, `attention_mask` and `type_ids` (all transformers reads by default) are built from sentencepiece's ids;
    `offsets`, `word_ids`, `sequence_ids`, `tokens` and `special_tokens_mask` from its pieces when `native` can
    (`sentencepiece_spans`). Any other attribute (`overflowing` of a cut row, `char_to_token`...) and those for a
    text `native` cannot handle come from the full `tokenizers.Encoding`, built by its batch (`_Batch.build`) on first
    use, with the same ids (checked).
    """

    __slots__ = (
        "_batch",
        "_encoding",
        "_index",
        "_native",
        "_pad_type_id",
        "_spans",
        "attention_mask",
        "ids",
        "n_sequences",
    )

    def __init__(self, ids: list[int], attention_mask: list[int], n_sequences: int, pad_type_id: int):
        self.ids, self.attention_mask, self.n_sequences = ids, attention_mask, n_sequences
        self._pad_type_id, self._encoding, self._spans = pad_type_id, None, None
        self._batch, self._index, self._native = None, 0, None

    @classmethod
    def wrap(cls, encoding: Encoding, spans: tuple | None) -> SentencePieceEncoding:
        """An already built encoding, with the character spans of any sequence rebuilt from sentencepiece's pieces."""
        row = cls(encoding.ids, encoding.attention_mask, encoding.n_sequences, 0)
        row._encoding, row._spans = encoding, spans
        return row

    @classmethod
    def padded(cls, ids: list[int], n_sequences: int, padding: dict | None, length: int | None, batch, index: int):
        """Row `index` of `batch`: `ids` padded to `length` as `padding` says (tokenizers' rules); the batch gives
        its other attributes when they are read (`_Batch.native`, else `_Batch.build`)."""
        attention_mask, pad_type_id = [1] * len(ids), 0
        if length is not None and length > len(ids):
            missing, pad_type_id = length - len(ids), padding["pad_type_id"]
            if padding["direction"] == "left":
                ids, attention_mask = [padding["pad_id"]] * missing + ids, [0] * missing + attention_mask
            else:
                ids, attention_mask = ids + [padding["pad_id"]] * missing, attention_mask + [0] * missing
        row = cls(ids, attention_mask, n_sequences, pad_type_id)
        row._batch, row._index = batch, index
        return row

    def _native_place(self) -> tuple[NativeRows, int] | None:
        """The batch's rows built from sentencepiece's pieces and this row's place among them (made on first use),
        None where `tokenizers` answers."""
        if self._encoding is not None:
            return None
        if self._native is None and self._batch is not None:
            self._native = self._batch.native(self._index) or False
        return self._native or None

    def _native_attribute(self, name: str) -> list | None:
        """Attribute `name` (`offsets`, `word_ids`...) made from sentencepiece's pieces, None where `tokenizers`
        answers."""
        place = self._native_place()
        return None if place is None else place[0].attribute(name, place[1])

    @property
    def word_ids(self) -> list[int | None]:
        native = self._native_attribute("word_ids")
        if native is not None:
            return native
        encoding = self.encoding
        if self._spans is None:
            return encoding.word_ids
        # Rebuilt from sentencepiece's pieces (one pre-split "word" per piece): the piece's own word.
        return [
            self._spans[sequence][1][word] if sequence is not None and word is not None else word
            for word, sequence in zip(encoding.word_ids, encoding.sequence_ids)
        ]

    words = word_ids  # `tokenizers`' older name

    @property
    def sequence_ids(self) -> list[int | None]:
        native = self._native_attribute("sequence_ids")
        return native if native is not None else self.encoding.sequence_ids

    @property
    def tokens(self) -> list[str]:
        native = self._native_attribute("tokens")
        return native if native is not None else self.encoding.tokens

    @property
    def special_tokens_mask(self) -> list[int]:
        native = self._native_attribute("special_tokens_mask")
        return native if native is not None else self.encoding.special_tokens_mask

    @property
    def encoding(self) -> Encoding:
        if self._encoding is None:
            encoding, self._spans = self._batch.build(self._index)
            if encoding.ids != self.ids:  # a bug in this module, never a property of the text
                raise RuntimeError(f"XLMRTokenizerFast built two different encodings: {self.ids} vs {encoding.ids}")
            self._encoding, self._batch = encoding, None
        return self._encoding

    @property
    def type_ids(self) -> list[int]:
        if self._encoding is not None:
            return self._encoding.type_ids
        # XLM-R has one token type: every text token is 0, padding gets the pad type id
        return [0 if real else self._pad_type_id for real in self.attention_mask]

    @property
    def offsets(self) -> list[tuple[int, int]]:
        native = self._native_attribute("offsets")
        if native is not None:
            return native
        encoding = self.encoding
        if self._spans is None:
            return encoding.offsets
        # Texts rebuilt from sentencepiece's pieces went through `tokenizers` as pre-split words: use their spans.
        offsets = []
        for offset, word, sequence in zip(encoding.offsets, encoding.word_ids, encoding.sequence_ids):
            sequence_spans = self._spans[sequence][0] if sequence is not None else None
            offsets.append(sequence_spans[word] if sequence_spans is not None and word is not None else offset)
        return offsets

    @property
    def overflowing(self) -> list[SentencePieceEncoding]:
        place = self._native_place()
        if place is not None and not place[0].truncated[place[1]]:
            return []
        return [SentencePieceEncoding.wrap(window, self._spans) for window in self.encoding.overflowing]

    def __len__(self) -> int:
        return len(self.ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoding, name)

    def __reduce__(self):  # pickles (DataLoader workers, datasets) as the plain `tokenizers.Encoding`
        return (_same, (self.encoding,))


def _same(value):
    return value


class NativeRows:
    """The per-token attributes of a batch's rows made from sentencepiece's pieces, all rows at once: `offsets`,
    `word_ids`, `sequence_ids`, `tokens` and `special_tokens_mask`, each laid out for the whole batch in numpy when
    first read and then handed out row by row (a fresh list each time, as `tokenizers` does).

    Row `r` is, position by position (fairseq's template `<s> A </s></s> B </s>`, or `A` / `A B` without special
    tokens):

        [pad] * missing[r] if padding is on the left
        for each of its texts t (one, or two for a pair):
            [<s> for the row's first text, else </s>]   if add_special_tokens
            the pieces of t (those the row keeps)
            [</s>]                                      if add_special_tokens
        [pad] * missing[r] if padding is on the right

    `piece_ids`, `starts` and `ends` are flat over the kept pieces of every text in row order (the spans of each
    piece within its own text or word), and so is what `words()` returns (each piece's word, made only if asked);
    text `t` keeps `counts[t]` pieces; row `r` holds `texts_per_row[r]` texts.
    """

    def __init__(
        self,
        piece_ids: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        words: Callable[[], np.ndarray],
        counts: np.ndarray,
        texts_per_row: np.ndarray,
        add_special_tokens: bool,
        padding: tuple[np.ndarray, str, str],
        truncated: np.ndarray,
        token_array: np.ndarray,
    ):
        self._piece_ids, self._starts, self._ends, self._words = piece_ids, starts, ends, words
        self._token_array, self.truncated = token_array, truncated.tolist()
        missing, direction, self._pad_token = padding
        special = int(add_special_tokens)
        blocks = counts + 2 * special  # each text's positions with its specials
        if len(counts) == len(texts_per_row):  # one text a row (most batches)
            lengths, text_firsts_in_row = blocks + missing, special
        else:
            text_row = np.repeat(np.arange(len(texts_per_row)), texts_per_row)
            lengths = np.bincount(text_row, weights=blocks, minlength=len(texts_per_row)).astype(np.int64) + missing
            block_starts = exclusive_sum(blocks)
            text_firsts_in_row = block_starts - block_starts[exclusive_sum(texts_per_row)][text_row] + special
        row_starts = exclusive_sum(lengths)
        leads = row_starts + missing if direction == "left" else row_starts  # where each row's first text begins
        text_firsts = (leads if len(counts) == len(texts_per_row) else leads[text_row]) + text_firsts_in_row
        self._size = int(lengths.sum())
        self._piece_positions = np.repeat(text_firsts - exclusive_sum(counts), counts) + np.arange(len(piece_ids))
        self._counts, self._texts_per_row = counts, texts_per_row
        if add_special_tokens:
            self._special_positions = np.concatenate([text_firsts - 1, text_firsts + counts])
            self._row_openings = leads  # each row's <s>
        else:
            self._special_positions = self._row_openings = np.zeros(0, np.int64)
        self._bounds = list(zip(row_starts.tolist(), (row_starts + lengths).tolist()))
        self._flat: dict[str, list] = {}

    def attribute(self, name: str, row: int) -> list:
        """Row `row`'s `offsets`, `word_ids`, `sequence_ids`, `tokens` or `special_tokens_mask`."""
        flat = self._flat.get(name)
        if flat is None:
            flat = self._flat[name] = getattr(self, f"_all_{name}")()
        start, end = self._bounds[row]
        return flat[start:end]

    def _all_offsets(self) -> list[tuple[int, int]]:
        starts, lengths = np.zeros(self._size, np.int64), np.zeros(self._size, np.int64)
        starts[self._piece_positions], lengths[self._piece_positions] = self._starts, self._ends - self._starts
        common = (starts < _COMMON_STARTS) & (lengths < _COMMON_LENGTHS)
        spans = _common_spans()[np.where(common, starts * _COMMON_LENGTHS + lengths, 0)]
        if not common.all():
            rare = np.flatnonzero(~common)
            rare_starts = starts[rare]
            rare_spans = zip(rare_starts.tolist(), (rare_starts + lengths[rare]).tolist())
            spans[rare] = np.fromiter(rare_spans, dtype=object, count=len(rare))
        return spans.tolist()

    def _all_word_ids(self) -> list[int | None]:
        return self._placed(self._words(), None)

    def _all_sequence_ids(self) -> list[int | None]:
        text_row = np.repeat(np.arange(len(self._texts_per_row)), self._texts_per_row)
        text_in_row = np.arange(len(self._counts)) - exclusive_sum(self._texts_per_row)[text_row]
        return self._placed(np.repeat(text_in_row, self._counts), None)

    def _all_special_tokens_mask(self) -> list[int]:
        mask = np.ones(self._size, np.int64)
        mask[self._piece_positions] = 0
        return mask.tolist()

    def _all_tokens(self) -> list[str]:
        tokens = np.full(self._size, self._pad_token, dtype=object)
        tokens[self._special_positions] = self._token_array[2]  # fairseq's ids: <s> is 0, </s> is 2
        tokens[self._row_openings] = self._token_array[0]
        tokens[self._piece_positions] = self._token_array[self._piece_ids]
        return tokens.tolist()

    def _placed(self, piece_values: np.ndarray, other) -> list:
        values = np.full(self._size, other, dtype=object)
        values[self._piece_positions] = piece_values
        return values.tolist()


# Spans starting in a text's first 512 characters and shorter than 32 (nearly all) are shared tuples made once:
# handing out a tuple already made costs neither an allocation nor, later, the cycle collector's look at it.
_COMMON_STARTS, _COMMON_LENGTHS = 512, 32


@functools.cache
def _common_spans() -> np.ndarray:
    spans = ((start, start + length) for start in range(_COMMON_STARTS) for length in range(_COMMON_LENGTHS))
    return np.fromiter(spans, dtype=object, count=_COMMON_STARTS * _COMMON_LENGTHS)


__all__ = ["NativeRows", "SentencePieceEncoding"]
