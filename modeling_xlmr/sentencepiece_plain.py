"""The rows that hold one plain text (or one list of plain pre-split words): their offsets, word ids and tokens
from running sums of their pieces' lengths, with few array operations a batch.

`NativeRows` (`sentencepiece_rows`, over `sentencepiece_spans`) lays out any batch, pairs and texts the
normalizer changes included, in ~100 small array operations: on short English lines (GPL-3, 62 characters and 16
pieces a line) that was a third of a call with offsets. A text that `NormalizationRule` keeps as it is, but for
the spaces it removes, needs far less: `PlainSpans` spans all such texts of a batch in ~25 operations (and ~15
more where some text loses spaces: `KeptCharacters` lays out all their characters and places the spans, as for
`NativeRows`), and `PlainRows` hands the rows out, in one loop when a call reads a whole column. The other rows of
a batch are left to `NativeRows` or the `tokenizers` pipeline.

The rule is `PieceSpans._bounds`' (one piece covering normalized characters s .. e-1 spans original characters
s-1 .. e-1, the dummy "▁" sharing the first character's span) and `KeptCharacters`' (the normalizer drops
spaces at the end and all but the last of each run; a leading run keeps its last space as the text's "▁", so the
text has no dummy). The offset tests run every case through both lanes and compare them with the `tokenizers`
pipeline.

Remote code (saved beside models and tokenizers): imports only the standard library, numpy and the other root
modules.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from .sentencepiece_spans import JoinedUnits, KeptCharacters, PieceSpans, exclusive_sum, span_tuples

Span = tuple[int, int]


@dataclass(frozen=True)
class PlainPieces:
    """The pieces of a batch's texts, flat in text order: piece `i` has the fairseq id `ids[i]` and the span
    `spans[i]`; text `t` holds `counts[t]` pieces from `firsts[t]` on, and `right[t]` says whether its spans are
    right (else this lane cannot tell them)."""

    ids: np.ndarray
    spans: list[Span]
    counts: np.ndarray
    firsts: np.ndarray
    right: np.ndarray


class PlainSpans:
    """The character spans of the pieces of texts the normalizer leaves alone (but for spaces), all texts of a batch
    at once, from `spans`' per-token tables (each token's length, and whether it spells its text)."""

    def __init__(self, spans: PieceSpans):
        # each token's length, where a piece that does not spell its text (specials, <unk>, bytes) is longer than
        # any text, so that its text's pieces never end where its kept characters do
        self._lengths = np.where(spans.unspelled, _UNSPELLED_LENGTH, spans.token_lengths).astype(np.int32)
        self._rule = spans.rule

    def of(self, texts: Sequence[str], ids: np.ndarray, counts: np.ndarray) -> PlainPieces:
        """The pieces of `texts` (texts, or words each encoded on its own) and their spans: `ids` are the fairseq
        ids of all their pieces, flat, text `t` having `counts[t]` of them. A text's spans are not right where it
        holds a character the normalizer may replace or merge, a piece that does not spell its text, or pieces that
        do not end where the text does. (Array methods rather than numpy's functions: their Python wrappers were ~5 %
        of a call.)"""
        joined = JoinedUnits(texts)
        changed = self._rule.replaced(joined)
        if len(texts) < _FEWEST_VECTORIZED_TEXTS:
            return self._of_few(ids, counts, KeptCharacters(joined, joined.spaced()), changed)
        kept = KeptCharacters(joined)
        lengths = self._lengths.take(ids)
        bounds = np.zeros(len(ids) + 1, np.int64)  # normalized characters before each piece, and in all
        lengths.cumsum(out=bounds[1:])
        lasts = counts.cumsum()  # one past each text's last piece
        firsts = lasts - counts
        before = bounds[firsts]  # before each text
        right = bounds[lasts] - before == kept.end - kept.first + kept.dummy
        if changed:
            right[list(changed)] = False
        # within the text's kept characters, as if contiguous from `first` (the dummy "▁" just before it, if any)
        ends = bounds[1:] + (kept.first - kept.dummy - before).repeat(counts)
        starts = ends - lengths
        # the dummy "▁" shares the first kept character's span (only a text's first piece can start before it)
        first = kept.first.repeat(counts)
        np.maximum(starts, first, out=starts)
        first += 1
        np.maximum(ends, first, out=ends)
        kept.place(starts, ends, counts)
        return PlainPieces(ids, span_tuples(starts, ends - starts), counts, firsts, right)

    def _of_few(self, ids: np.ndarray, counts: np.ndarray, kept: KeptCharacters, changed: set[int]) -> PlainPieces:
        """`of` text by text in Python, the same arithmetic on lists: for a few texts, numpy's fixed cost per
        operation (~1 us, ~20 of them) is most of a call."""
        lengths = self._lengths[ids].tolist()
        runs = {}  # each text's inner runs, in order
        for text, run_start, run_end in kept.runs:
            runs.setdefault(text, []).append((run_start, run_end))
        spans, right, first_piece = [], [], 0
        for index, (count, first, dummy, end) in enumerate(
            zip(counts.tolist(), kept.first.tolist(), kept.dummy.tolist(), kept.end.tolist())
        ):
            text_spans = None
            if index not in changed:
                piece_lengths = lengths[first_piece : first_piece + count]
                text_spans = _text_spans(piece_lengths, first, dummy, end, runs.get(index, ()))
            spans += text_spans or [(0, 0)] * count
            right.append(text_spans is not None)
            first_piece += count
        return PlainPieces(ids, spans, counts, exclusive_sum(counts), np.array(right, bool))


def _text_spans(piece_lengths: list[int], first: int, dummy: int, end: int, runs: Sequence[Span]) -> list[Span] | None:
    """One text's spans (`PlainSpans.of`'s arithmetic on lists; `first`, `dummy`, `end` and `runs` as
    `KeptCharacters` says), None if its pieces do not end where its kept characters do."""
    if not piece_lengths:
        return [] if end == first else None
    bounds = list(accumulate(piece_lengths, initial=first - dummy))
    if bounds[-1] != end:
        return None
    starts, ends = bounds[:-1], bounds[1:]
    starts[0], ends[0] = first, max(ends[0], first + 1)
    for run_start, run_end in runs:  # left to right, so each run's start is already in the text's own places
        removed = run_end - run_start - 1
        moved = bisect_left(starts, run_start)
        starts[moved:] = [start + removed for start in starts[moved:]]
        moved = bisect_right(ends, run_start)
        ends[moved:] = [end + removed for end in ends[moved:]]
    return list(zip(starts, ends))


_UNSPELLED_LENGTH = 1 << 24

# From this many texts on, `PlainSpans.of` spans a batch in numpy; below, text by text in Python. Measured on a
# 2-core Zen 4, in us, Python / numpy: 2 English lines 20 / 37, 4 27 / 39, 8 45 / 44, 16 88 / 83; 2 CLDR lines 14 /
# 29, 8 30 / 29, 16 53 / 32; 2 words 15 / 45, 8 30 / 29, 16 52 / 30.
_FEWEST_VECTORIZED_TEXTS = 8


class PlainRows:
    """The per-token attributes of a batch's rows that each hold one text (or one list of words) whose spans
    `PlainSpans` could tell: `offsets`,
    `word_ids`, `sequence_ids`, `tokens` and `special_tokens_mask`, handed out row by row (a fresh list each
    time, as `tokenizers` does) from per-piece lists made for all rows on first read.

    Row `r` is, position by position (fairseq's template `<s> A </s>`, or `A` without special tokens):

        [pad] * missing[r] if padding is on the left
        [<s>]  if add_special_tokens
        the pieces of its text that its cut keeps: flat pieces bounds[r][0] .. bounds[r][1] - 1
        [</s>] if add_special_tokens
        [pad] * missing[r] if padding is on the right

    The flat pieces are `pieces` (`PlainSpans.of`), all the rows' texts' pieces, text after text (for pre-split
    words: all the rows' words' pieces, word after word, and `words` makes each piece's word)."""

    def __init__(
        self,
        pieces: PlainPieces,
        bounds: list[Span],
        missing: list[int],
        truncated: list[bool],
        add_special_tokens: bool,
        pad: tuple[str, str],
        tables: PieceSpans,
        words: Callable[[], np.ndarray] | None = None,
    ):
        self._pieces, self._tables, self._words = pieces, tables, words
        self._bounds, self._missing, self.truncated = bounds, missing, truncated
        self._special, (self._pad_direction, self._pad_token) = add_special_tokens, pad
        self._columns: dict[str, tuple[list, Any, Any, Any]] = {}

    def attribute(self, name: str, row: int) -> list:
        """Row `row`'s `offsets`, `word_ids`, `sequence_ids`, `tokens` or `special_tokens_mask`."""
        pieces, opening, closing, pad = self._column(name)
        start, stop = self._bounds[row]
        values = [opening, *pieces[start:stop], closing] if self._special else pieces[start:stop]
        missing = self._missing[row]
        if missing > 0:
            values = [pad] * missing + values if self._pad_direction == "left" else values + [pad] * missing
        return values

    def every_row(self, name: str) -> list[list]:
        """`attribute` of every row, in order: for rows without padding, one loop over them."""
        pieces, opening, closing, _ = self._column(name)
        if any(self._missing):
            return [self.attribute(name, row) for row in range(len(self._bounds))]
        if self._special:
            return [[opening, *pieces[start:stop], closing] for start, stop in self._bounds]
        return [pieces[start:stop] for start, stop in self._bounds]

    def _column(self, name: str) -> tuple[list, Any, Any, Any]:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = getattr(self, f"_{name}")()
        return column

    # each attribute: its per-piece values, then its value at <s>, at </s> and at a pad
    def _offsets(self) -> tuple[list, Any, Any, Any]:
        return self._pieces.spans, (0, 0), (0, 0), (0, 0)

    def _word_ids(self) -> tuple[list, Any, Any, Any]:
        if self._words is not None:
            return self._words().tolist(), None, None, None
        # Metaspace's split: a new word at every piece beginning with "▁", each text's first word being 0
        return self._tables.word_numbers(self._pieces).tolist(), None, None, None

    def _sequence_ids(self) -> tuple[list, Any, Any, Any]:
        return [0] * len(self._pieces.ids), None, None, None

    def _special_tokens_mask(self) -> tuple[list, Any, Any, Any]:
        return [0] * len(self._pieces.ids), 1, 1, 1

    def _tokens(self) -> tuple[list, Any, Any, Any]:
        tokens = self._tables.token_array
        return tokens[self._pieces.ids].tolist(), tokens[0], tokens[2], self._pad_token  # fairseq's <s> is 0, </s> 2


__all__ = ["PlainPieces", "PlainRows", "PlainSpans"]
