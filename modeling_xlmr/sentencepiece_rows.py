"""The rows `XLMRTokenizerFast` returns: what transformers reads from a `tokenizers.Encoding`, made from
sentencepiece's ids and pieces (`SentencePieceEncoding`, `NativeRow`), with the `tokenizers` pipeline's own
encoding standing behind for anything else.

Remote code (saved beside models and tokenizers): imports only the standard library, `tokenizers` and the
other root modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenizers import Encoding


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

    def _native_row(self) -> NativeRow | None:
        """The attributes built from sentencepiece's pieces (made on first use), None where `tokenizers` answers."""
        if self._encoding is not None:
            return None
        if self._native is None and self._batch is not None:
            self._native = self._batch.native(self._index) or False
        return self._native or None

    @property
    def word_ids(self) -> list[int | None]:
        native = self._native_row()
        if native is not None:
            return native.word_ids
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
        native = self._native_row()
        return native.sequence_ids if native is not None else self.encoding.sequence_ids

    @property
    def tokens(self) -> list[str]:
        native = self._native_row()
        return native.tokens if native is not None else self.encoding.tokens

    @property
    def special_tokens_mask(self) -> list[int]:
        native = self._native_row()
        return native.special_tokens_mask if native is not None else self.encoding.special_tokens_mask

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
        native = self._native_row()
        if native is not None:
            return native.offsets
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
        native = self._native_row()
        if native is not None and not native.truncated:
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


class NativeRow:
    """A row's per-token attributes from sentencepiece's pieces, as transformers reads them from a `tokenizers`
    `Encoding`: `offsets` (made at once: what callers read most), and `word_ids`, `sequence_ids`, `tokens` and
    `special_tokens_mask`, each made when first read.

    `sequences` holds each text's (ids, spans, word source) as the row keeps them, `word_ids_of(word source)` being
    the text's word ids; the row is `<s> A </s>` / `<s> A </s></s> B </s>` (fairseq's template) or `A` / `A B`
    without special tokens, then padded with `padding = (count, direction, pad token)`."""

    __slots__ = (
        "_padding",
        "_token_strings",
        "_values",
        "_word_ids_of",
        "add_special_tokens",
        "offsets",
        "sequences",
        "truncated",
    )

    def __init__(self, sequences, add_special_tokens: bool, truncated: bool, token_strings, word_ids_of, padding):
        self.sequences, self.add_special_tokens, self.truncated = sequences, add_special_tokens, truncated
        self._token_strings, self._word_ids_of, self._padding, self._values = token_strings, word_ids_of, padding, None
        if len(sequences) == 1 and add_special_tokens and not padding[0]:  # most rows: `<s> A </s>`
            self.offsets = [(0, 0), *sequences[0][1], (0, 0)]
        else:
            self.offsets = self._layout([spans for _, spans, _ in sequences], (0, 0), (0, 0))

    @classmethod
    def assemble(
        cls,
        sequences: list[tuple[list[int], list[tuple[int, int]], Any]],
        kept: int,
        truncation_side: str,
        add_special_tokens: bool,
        token_strings: list[str],
        word_ids_of: Callable[[Any], list[int]],
        padding: tuple[int, str, str] = (0, "right", ""),
    ) -> NativeRow:
        """`kept`: how many of a single text's pieces the row keeps (pairs are never cut here)."""
        truncated = len(sequences) == 1 and kept < len(sequences[0][0])
        if truncated:
            window = slice(0, kept) if truncation_side == "right" else slice(len(sequences[0][0]) - kept, None)
            ids, spans, words = sequences[0]
            sequences, word_ids_of = [(ids[window], spans[window], word_ids_of(words)[window])], list
        return cls(sequences, add_special_tokens, truncated, token_strings, word_ids_of, padding)

    def _layout(self, values: list[list], special, pad) -> list:
        """Each sequence's values with `special` at its template positions, then the padding."""
        if len(values) == 1 and self.add_special_tokens:
            row = [special, *values[0], special]
        else:
            row = []
            for sequence_values in values:
                row += [special, *sequence_values, special] if self.add_special_tokens else sequence_values
        missing, direction, _ = self._padding
        if missing > 0:
            row = [pad] * missing + row if direction == "left" else row + [pad] * missing
        return row

    def _made(self, name: str, make) -> list:
        if self._values is None:
            self._values = {}
        if name not in self._values:
            self._values[name] = make()
        return self._values[name]

    @property
    def word_ids(self) -> list[int | None]:
        def make():
            words = [self._word_ids_of(words) for _, _, words in self.sequences]
            return self._layout(words, None, None)

        return self._made("word_ids", make)

    @property
    def sequence_ids(self) -> list[int | None]:
        def make():
            return self._layout([[index] * len(ids) for index, (ids, _, _) in enumerate(self.sequences)], None, None)

        return self._made("sequence_ids", make)

    @property
    def special_tokens_mask(self) -> list[int]:
        return self._made(
            "special_tokens_mask", lambda: self._layout([[0] * len(i) for i, _, _ in self.sequences], 1, 1)
        )

    @property
    def tokens(self) -> list[str]:
        def make():
            strings = self._token_strings  # fairseq's ids: <s> is 0, </s> is 2
            row = self._layout(
                [[strings[i] for i in ids] for ids, _, _ in self.sequences], strings[2], self._padding[2]
            )
            if self.add_special_tokens:  # </s> closes each text and opens the second; <s> opens the row
                missing, direction, _ = self._padding
                row[missing if direction == "left" and missing > 0 else 0] = strings[0]
            return row

        return self._made("tokens", make)


__all__ = ["NativeRow", "SentencePieceEncoding"]
