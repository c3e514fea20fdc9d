"""The rows `XLMRTokenizerFast` returns: what transformers reads from a `tokenizers.Encoding`, made from
sentencepiece's ids and pieces (`SentencePieceEncoding`; `PlainRows` for rows of one plain text or one list of
plain words, `NativeRows` for the others), with the `tokenizers` pipeline's own encoding standing behind for
anything else; and the batch they share (`LazyBatch`), which makes each for all its rows at once when a row first
needs it.

Remote code (saved beside models and tokenizers): imports only the standard library, numpy, `tokenizers` and the
other root modules.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain, compress
from typing import Any

import numpy as np
from tokenizers import Encoding

from .sentencepiece_plain import PlainRows
from .sentencepiece_spans import UnitPieces, exclusive_sum, span_tuples


class SentencePieceEncoding:
    """One row of a batch, standing in for a `tokenizers.Encoding`.

    `ids`, `attention_mask` and `type_ids` (all transformers reads by default) are built from sentencepiece's ids;
    `offsets`, `word_ids`, `sequence_ids`, `tokens` and `special_tokens_mask` from its pieces when `native` can
    (`sentencepiece_spans`). Any other attribute (`overflowing` of a cut row, `char_to_token`...) and those for a
    text `native` cannot handle come from the full `tokenizers.Encoding`, built by its batch (`LazyBatch.build`) on
    first use, with the same ids (checked).
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

    def __init__(
        self, ids: list[int], attention_mask: list[int], n_sequences: int, pad_type_id: int, batch=None, index: int = 0
    ):
        self.ids, self.attention_mask, self.n_sequences = ids, attention_mask, n_sequences
        self._pad_type_id, self._encoding, self._spans = pad_type_id, None, None
        self._batch, self._index, self._native = batch, index, None

    @classmethod
    def wrap(cls, encoding: Encoding, spans: tuple | None) -> SentencePieceEncoding:
        """An already built encoding, with the character spans of any sequence rebuilt from sentencepiece's pieces."""
        row = cls(encoding.ids, encoding.attention_mask, encoding.n_sequences, 0)
        row._encoding, row._spans = encoding, spans
        return row

    def _native_place(self) -> tuple[PlainRows | NativeRows, int] | None:
        """The batch's rows built from sentencepiece's pieces and this row's place among them (made on first use),
        None where `tokenizers` answers."""
        if self._encoding is not None:
            return None
        if self._native is None and self._batch is not None:
            self._native = self._batch.plain(self._index) or self._batch.native(self._index) or False
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


class LazyRows(Sequence):
    """The rows of one `encode_batch` call, in order: each a `SentencePieceEncoding`, made when first read, while the
    columns transformers reads of every row (`ids`, `attention_masks`) are made for all rows at once, padded as the
    call asked (a row object costs ~5,000 instructions to make and free: a third of what a short line's ids call
    adds to sentencepiece). Pickles as the list of its rows."""

    def __init__(self, batch: LazyBatch, rows: list):
        # `rows`: each row's ids (a lazy row) or its built `SentencePieceEncoding`, unpadded
        length, padding = batch.length, batch.padding
        self._batch, self._pad_type_id = batch, padding["pad_type_id"] if length is not None else 0
        every_row_lazy = len(batch.lazy_rows) == len(rows)
        self._made = [None] * len(rows) if every_row_lazy else [None if isinstance(row, list) else row for row in rows]
        if length is None:
            self.ids = rows if every_row_lazy else [row if isinstance(row, list) else row.ids for row in rows]
            self.attention_masks = [[1] * len(row) for row in self.ids]
            return
        self.ids, self.attention_masks = [], []
        for row in rows:
            if isinstance(row, list):
                missing, mask = length - len(row), [1] * len(row)
                if padding["direction"] == "left":
                    row, mask = [padding["pad_id"]] * missing + row, [0] * missing + mask
                else:
                    row, mask = row + [padding["pad_id"]] * missing, mask + [0] * missing
            else:
                row.encoding.pad(length, **pad_arguments(padding))
                row.ids, row.attention_mask = row.encoding.ids, row.encoding.attention_mask
                row, mask = row.ids, row.attention_mask
            self.ids.append(row)
            self.attention_masks.append(mask)

    def __len__(self) -> int:
        return len(self._made)  # not `ids`, a list the caller holds and may change

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        row = self._made[index]  # an IndexError past the end, as a list
        if row is None:
            index %= len(self._made)  # a negative index: the row's own
            n_sequences = len(self._batch.items[index])
            row = SentencePieceEncoding(
                self.ids[index], self.attention_masks[index], n_sequences, self._pad_type_id, self._batch, index
            )
            self._made[index] = row
        return row

    def column(self, name: str) -> list[list]:
        """`[getattr(row, name) for row in self]` for `offsets` or `special_tokens_mask`: when every row is a plain
        row, handed out in one loop without making the row objects (a property, a lookup and a call per row cost
        ~1 us a row, a fifth of a short line's offsets)."""
        plain, positions = self._batch.plain_lane()
        if plain is not None and len(positions) == len(self):
            return plain.every_row(name)
        return [getattr(row, name) for row in self]

    def __reduce__(self):
        return (list, (list(self),))


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
        return span_tuples(starts, lengths)

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


# `NativeRows`' fixed cost per batch (~100 small array operations, ~250 us) is more than the `tokenizers` pipeline
# takes for a text or two (checked against sentencepiece's ids as for any other row it builds): one text with
# offsets takes about half the time there. From about 3 distinct texts on (short multilingual lines, indented
# English ones) the numpy layout is the faster. Counted among the rows the plain lane does not take.
_FEWEST_NATIVE_ROWS = 3


class LazyBatch:
    """What one `encode_batch` call was asked, kept so its rows can be built later, all at once: from
    sentencepiece's pieces (`native`) or by `tokenizers` (`build`). `backend` is the `SentencePieceBackend` that
    made it."""

    def __init__(
        self,
        backend,
        items: list[tuple],
        parts: list[list],
        add_special_tokens: bool,
        segments: list[list] | None,
        word_counts: np.ndarray | None = None,
    ):
        tokenizer = backend._backend
        self.backend, self.items, self.add_special_tokens = backend, items, add_special_tokens
        self.parts, self.segments = parts, segments  # each text's ids (pre-split words: its words' ids, in order)
        # pre-split words: the number of pieces of each word of the batch (all items' words in order), else None
        self.pretokenized, self.word_counts = word_counts is not None, word_counts
        self.truncation, self.padding = tokenizer.truncation, tokenizer.padding
        self.split_special_tokens = tokenizer.encode_special_tokens
        self.own_template = (
            not add_special_tokens or template_state(tokenizer.post_processor) == backend._template_state
        )
        self.length, self.lazy_rows, self.row_lengths = None, [], []
        self.native_failed: list[int] = []
        self.has_added_tokens = segments is not None  # each text's (or word's) parts around its added tokens
        self._natives: tuple[NativeRows | None, dict[int, int]] | None = None
        self._plains: tuple[PlainRows | None, dict[int, int]] | None = None
        self._encodings: dict[int, tuple] = {}

    def plain(self, index: int) -> tuple[PlainRows, int] | None:
        """Row `index`'s per-token attributes from `PlainSpans` (the batch's plain rows and the row's place among
        them), None where the row is not one text that lane can tell (a pair, pre-split words, an added token, a
        character the normalizer changes): `native` or `tokenizers` then answers."""
        rows, positions = self.plain_lane()
        position = positions.get(index)
        return None if position is None else (rows, position)

    def plain_lane(self) -> tuple[PlainRows | None, dict[int, int]]:
        """The batch's plain rows and each one's place among them (by its index in the batch), made for every lazy
        row of the batch at once on first use."""
        if self._plains is None:
            self._plains = self._all_plains()
        return self._plains

    def _all_plains(self) -> tuple[PlainRows | None, dict[int, int]]:
        plain_spans = self.backend._reference.plain_spans
        if plain_spans is None:
            return None, {}
        rows = [row for row in self.lazy_rows if len(self.items[row]) == 1]
        if self.has_added_tokens:
            rows = [row for row in rows if not _has_added_tokens(self.segments[row], self.pretokenized)]
        if not rows:
            return None, {}
        units = self._units_of(rows)
        pieces = plain_spans.of(units.units, units.ids, units.counts)
        right, counts, words = pieces.right, pieces.counts, None
        if self.pretokenized:  # the units are the words, each encoded on its own
            counts, right = units.per_text(pieces.right)
            words = units.words
        ends = counts.cumsum()  # where each text's pieces end among the flat pieces
        starts = ends - counts
        if not right.all():
            chosen = np.flatnonzero(right)
            if not len(chosen):
                return None, {}
            rows, starts, ends = [rows[index] for index in chosen.tolist()], starts[chosen], ends[chosen]
        truncated, missing = [False] * len(rows), [0] * len(rows)
        if self.truncation or self.length:  # only truncation and padding need each row's length
            row_lengths = np.fromiter(map(self.row_lengths.__getitem__, rows), np.int64, len(rows))
        if self.truncation:  # a plain cut keeps a window of the text's pieces
            windows = row_lengths - (2 if self.add_special_tokens else 0)
            cut = windows < ends - starts
            if self.truncation["direction"] == "left":
                starts = np.where(cut, ends - windows, starts)
            else:
                ends = np.where(cut, starts + windows, ends)
            truncated = cut.tolist()
        if self.length:
            missing = (self.length - row_lengths).tolist()
        direction, pad_token = (self.padding["direction"], self.padding["pad_token"]) if self.padding else ("right", "")
        plain = PlainRows(
            pieces,
            list(zip(starts.tolist(), ends.tolist())),
            missing,
            truncated,
            self.add_special_tokens,
            (direction, pad_token),
            self.backend._reference.piece_spans,
            words,
        )
        return plain, dict(zip(rows, range(len(rows))))

    def native(self, index: int) -> tuple[NativeRows, int] | None:
        """Row `index`'s per-token attributes from sentencepiece's pieces (the batch's rows and the row's place
        among them), None if one of its texts (or words) holds an added token or is not normalized character for
        character, or if the batch is too small to be worth laying out in numpy (`tokenizers` then builds the row).
        The first call does every lazy row of the batch that `plain` does not at once."""
        if self._natives is None:
            plain_positions = self.plain_lane()[1]
            rows = [row for row in self.lazy_rows if row not in plain_positions]
            self._natives = self._all_natives(rows) if len(rows) >= _FEWEST_NATIVE_ROWS else (None, {})
            # the rows left to `tokenizers`, which `build` then makes in one call
            self.native_failed = [row for row in rows if row not in self._natives[1]]
        rows, positions = self._natives
        position = positions.get(index)
        return None if position is None else (rows, position)

    def _all_natives(self, rows: list[int]) -> tuple[NativeRows | None, dict[int, int]]:
        """The chosen lazy rows whose texts all have spans from sentencepiece's pieces, laid out together, and the
        place of each such row (by its index in the batch) among them."""
        if self.has_added_tokens:
            rows = [row for row in rows if not _has_added_tokens(self.segments[row], self.pretokenized)]
        if not rows:
            return None, {}
        pieces, counts, kept, words = self._pieces_of_texts(rows)
        # C-level iteration over the rows (a generator per row costs more than the numpy work of a short batch)
        texts_per_row = np.fromiter(map(len, map(self.items.__getitem__, rows)), np.int64, len(rows))
        text_row = np.repeat(np.arange(len(rows)), texts_per_row)
        row_kept = np.bincount(text_row, weights=~kept, minlength=len(rows)) == 0
        # what each text keeps: a single text all the row has room for (cut as truncation says), a pair all of it
        if self.truncation or self.length:  # only truncation and padding need each row's length
            row_lengths = np.fromiter(map(self.row_lengths.__getitem__, rows), np.int64, len(rows))
        windows = counts
        if self.truncation:  # without truncation every row has room for all its pieces
            room = row_lengths - (2 if self.add_special_tokens else 0)
            windows = np.where(texts_per_row[text_row] == 1, np.minimum(room[text_row], counts), counts)
        if row_kept.all() and (windows == counts).all():
            chosen = slice(None)  # every piece of every text
        else:
            place = np.arange(len(pieces.ids)) - np.repeat(exclusive_sum(counts), counts)  # in its text
            if self.truncation and self.truncation["direction"] == "left":
                place -= np.repeat(counts - windows, counts)
            chosen = (place >= 0) & (place < np.repeat(windows, counts)) & np.repeat(row_kept[text_row], counts)
        missing = np.zeros(len(rows), np.int64)
        if self.length:  # padded: each row's pad positions
            missing = np.maximum(self.length - row_lengths, 0)
        direction, pad_token = (self.padding["direction"], self.padding["pad_token"]) if self.padding else ("right", "")
        kept_texts = row_kept[text_row]
        native = NativeRows(
            pieces.ids[chosen],
            pieces.starts[chosen],
            pieces.ends[chosen],
            lambda: words()[chosen],
            windows[kept_texts],
            texts_per_row[row_kept],
            self.add_special_tokens,
            (missing[row_kept], direction, pad_token),
            (windows < counts)[kept_texts],
            self.backend._reference.piece_spans.token_array,
        )
        kept_rows = rows if row_kept.all() else list(compress(rows, row_kept.tolist()))
        return native, dict(zip(kept_rows, range(len(kept_rows))))

    def _pieces_of_texts(self, rows: list[int]) -> tuple[UnitPieces, np.ndarray, np.ndarray, Callable[[], np.ndarray]]:
        """The pieces of the rows' texts (flat, in order), how many each text has, whether each text's spans are
        right, and a function making each piece's word: for pre-split words the word it came from (its spans are
        within that word), else where Metaspace splits the text."""
        spans_of = self.backend._reference.piece_spans
        units = self._units_of(rows)
        pieces = spans_of.pieces_of(units.units, units.ids, units.counts)
        if not self.pretokenized:
            return pieces, pieces.counts, pieces.kept, lambda: spans_of.word_numbers(pieces)
        counts, kept = units.per_text(pieces.kept)
        return pieces, counts, kept, units.words

    def _units_of(self, rows: list[int]) -> _Units:
        texts = list(chain.from_iterable(map(self.items.__getitem__, rows)))
        text_ids = list(chain.from_iterable(map(self.parts.__getitem__, rows)))
        flat = list(chain.from_iterable(text_ids))
        ids = np.empty(len(flat), np.int64)  # packed by struct: ~25 % fewer instructions than np.fromiter
        struct.pack_into(f"{len(flat)}q", ids, 0, *flat)
        if not self.pretokenized:
            return _Units(texts, ids, np.fromiter(map(len, text_ids), np.int64, len(text_ids)), None)
        word_counts = self.word_counts
        if len(rows) < len(self.items):
            words_per_item = [sum(map(len, item)) for item in self.items]
            word_counts = word_counts[np.repeat(np.isin(np.arange(len(self.items)), rows), words_per_item)]
        words_per_text = np.fromiter(map(len, texts), np.int64, len(texts))
        return _Units(list(chain.from_iterable(texts)), ids, word_counts, words_per_text)

    def build(self, index: int) -> tuple[Encoding, tuple | None]:
        """Row `index`'s encoding, padded as the call asked. Built together with the batch's other rows that need
        one: every row `native` could not do (for a row it could not do), else every lazy row (a caller reading
        `char_to_token` and the like of one row usually reads them of all)."""
        if index not in self._encodings:
            wanted = self.native_failed if index in self.native_failed else self.lazy_rows
            wanted = [row for row in wanted if row not in self._encodings]
            for row, (encoding, spans) in zip(wanted, self.backend._build_encodings(self, wanted)):
                if self.length is not None:
                    encoding.pad(self.length, **pad_arguments(self.padding))
                self._encodings[row] = (encoding, spans)
        return self._encodings[index]


class _Units:
    """What a batch's chosen texts are encoded as, in order: the texts themselves, or for pre-split words each word
    on its own (`words_per_text` then says how many each text has, else None); `ids` are the fairseq ids of all
    their pieces, flat, unit `u` having `counts[u]` of them."""

    def __init__(self, units: list[str], ids: np.ndarray, counts: np.ndarray, words_per_text: np.ndarray | None):
        self.units, self.ids, self.counts, self._words_per_text = units, ids, counts, words_per_text

    def per_text(self, unit_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For words: how many pieces each text has, and whether all its words' spans are right."""
        texts = len(self._words_per_text)
        word_text = np.repeat(np.arange(texts), self._words_per_text)
        counts = np.bincount(word_text, weights=self.counts, minlength=texts).astype(np.int64)
        return counts, np.bincount(word_text, weights=~unit_right, minlength=texts) == 0

    def words(self) -> np.ndarray:
        """For words: the word of each piece within its text."""
        word_text = np.repeat(np.arange(len(self._words_per_text)), self._words_per_text)
        word_in_text = np.arange(len(word_text)) - exclusive_sum(self._words_per_text)[word_text]
        return np.repeat(word_in_text, self.counts)


def _has_added_tokens(segments: list, pretokenized: bool) -> bool:
    """Whether a row's texts (or their words) hold an added token such as "<mask>": such rows are `tokenizers`'."""
    if pretokenized:
        return any(any(word_segments) for word_segments in segments)
    return any(text_segments is not None for text_segments in segments)


def template_state(post_processor) -> str | None:
    return None if post_processor is None else post_processor.__getstate__()


def pad_arguments(padding: dict) -> dict:
    return {key: padding[key] for key in ("direction", "pad_id", "pad_type_id", "pad_token")}


__all__ = ["LazyBatch", "LazyRows", "NativeRows", "SentencePieceEncoding", "template_state"]
