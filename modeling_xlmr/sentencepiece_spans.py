"""Offsets, word ids and tokens of XLMRTokenizerFast's rows from sentencepiece's own pieces, without `tokenizers`.

The `tokenizers` pipeline reports a piece's span as the original characters its normalized characters are aligned
with. Wherever the normalization maps the text character for character (each character to one character, " " to
"▁", the dummy "▁" prepended, nothing removed or merged), that alignment is the identity shifted by the dummy
prefix, and a piece covering normalized characters `s .. e-1` spans original characters `max(s-1, 0) .. max(e-1, 1)`
(the dummy "▁" shares the first character's span, as `tokenizers`' `Prepend` aligns it). So for such a text the
spans follow from the lengths of sentencepiece's pieces alone.

Whether a text is such a text (or one that only loses spaces) is decided exactly, in three ways:

* by its characters (`NormalizationRule`), read from the normalizer's own table: no character that any of the
  table's multi-character entries needs in second place (so none of them can match), no character the table maps
  to something else, single spaces only and none at either end, and no piece that does not spell its own text
  (unknown or byte pieces). One flag per character for a whole batch at once; most text passes.
* texts that pass but for spaces at either end or in runs (indented lines, two spaces between sentences): the
  normalizer removes those spaces and changes nothing else, so the spans over the characters it keeps are moved
  onto the text's own (`KeptCharacters`), with nothing to spell out. The last space before the first word is kept
  as the text's "▁" (as transformers' pipeline aligns it), so the first piece of an indented line starts there.
* otherwise by spelling (`PieceSpans._respanned`, all such texts of a batch at once): sentencepiece's pieces spell
  its normalized text, which must equal "▁" + the text with every character replaced by its own one-character
  normalization (a table built once from sentencepiece's normalizer, per character in context "a?a"; this admits
  e.g. fullwidth forms and tabs) and the normalizer's whitespace rule applied: spaces at the end removed and
  each run made one space (a leading one then being the "▁"), aligned as `tokenizers` aligns them (so tabs,
  CRLFs and U+3000 in runs qualify).

Texts that fail all three (characters that expand, vanish or merge, unknown pieces, the few whitespace cases the
pipeline aligns otherwise) are left to the `tokenizers` pipeline; those are a small minority of real text.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

SPACE_SYMBOL = "\u2581"
_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True)
class UnitPieces:
    """The pieces of a run of units (texts, or words each encoded on its own), flat in unit order: piece `i` has the
    fairseq id `ids[i]` and spans characters `starts[i] .. ends[i]` of its own unit; unit `u` holds `counts[u]`
    pieces, and `kept[u]` says whether its spans are right (else the unit needs the `tokenizers` pipeline; a unit
    with no piece is always right)."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    counts: np.ndarray
    kept: np.ndarray


class PieceSpans:
    """Spans, word starts and token strings of fairseq ids, for texts normalized character for character (spaces at
    either end or in runs aside).

    `vocab` is the fairseq vocabulary (token -> id) the ids come from; `normalizer` a `SentencePieceNormalizer` of
    the same model (used once, to build the character table). Per-id tables are numpy arrays, which Python's
    cycle collector does not walk: a list of 250k strings would cost every full collection of the process ~40 ms."""

    def __init__(self, vocab: dict[str, int], normalizer, rule: NormalizationRule | None = None):
        tokens = [""] * (max(vocab.values()) + 1)
        for token, token_id in vocab.items():
            tokens[token_id] = token
        self.token_array = np.array(tokens, dtype=object)
        self.token_lengths = np.fromiter(map(len, tokens), np.int64, len(tokens))
        self.starts_word = np.array([token.startswith(SPACE_SYMBOL) for token in tokens])
        self._normalizer = normalizer
        self.rule = rule
        # pieces whose token string is not the text they cover: specials, <unk>, byte pieces (<0x41>)
        self.unspelled = np.array([_NOT_SPELLED.fullmatch(token) is not None for token in tokens])

    @functools.cached_property
    def table(self) -> dict[int, str]:
        """Each BMP character whose normalization in context is one other character (read through `_space_codes`)."""
        characters = [chr(code) for code in range(0x10000) if code not in _SURROGATES]
        normalized = self._normalizer.normalize([f"a{character}a" for character in characters])
        table = {ord(" "): SPACE_SYMBOL}
        for character, text in zip(characters, normalized):
            if len(text) == 4 and text[:2] == SPACE_SYMBOL + "a" and text[3] == "a" and text[2] != character:
                table[ord(character)] = text[2]
        return table

    def pieces_of(self, units: Sequence[str], ids: np.ndarray, counts: np.ndarray) -> UnitPieces:
        """The spans of every piece of every unit (texts, or words each encoded on its own), in one pass: `ids` are
        the fairseq ids of all the units' pieces, flat, unit `u` having `counts[u]` of them."""
        joined = JoinedUnits(units)
        doubtful, spaced = self._units_maybe_changed(joined, ids)
        # spans over the characters the normalizer keeps, then moved onto the unit's own
        kept_characters = KeptCharacters(joined, None if spaced else ())
        kept_count = kept_characters.end - kept_characters.first
        starts, ends, kept = self._bounds(kept_count, ids, counts, kept_characters.dummy == 0)
        if spaced:
            starts += np.repeat(kept_characters.first, counts)
            ends += np.repeat(kept_characters.first, counts)
            kept_characters.place(starts, ends, counts)
        if doubtful:
            chosen = np.fromiter(doubtful, np.int64, len(doubtful))
            chosen = chosen[counts[chosen] > 0]  # a unit without pieces has no span to move
            if len(chosen):
                kept[chosen] = self._respanned(units, chosen, ids, counts, starts, ends)
        return UnitPieces(ids, starts, ends, counts, kept)

    def word_numbers(self, pieces) -> np.ndarray:
        """The word of each piece within its unit (`pieces`: a `UnitPieces` or anything with its `ids` and `counts`):
        a new word starts at every piece beginning with "▁" (Metaspace's split), the first word being 0."""
        starting = self.starts_word[pieces.ids]
        before = np.cumsum(starting) - starting  # word starts before each piece, all units together
        firsts = exclusive_sum(pieces.counts)
        nonempty = pieces.counts > 0
        unit_base = np.zeros_like(pieces.counts)
        unit_base[nonempty] = before[firsts[nonempty]]
        return before + starting - np.repeat(unit_base, pieces.counts) - 1

    def _units_maybe_changed(self, joined: JoinedUnits, ids: np.ndarray) -> tuple[Collection[int], bool]:
        """The units not known to normalize to "▁" + themselves with " " -> "▁" (the pieces, which spell the
        normalized text, are then checked by `_bounds`): by their characters where the rule is known, else by one
        string comparison of what all the pieces spell (every unit when it fails).

        And whether, the rule being known, some unit loses spaces to it (an indented line, a run of spaces between
        sentences): `KeptCharacters` then places their spans without spelling them out."""
        units = joined.units
        if self.rule is None:
            spelled = "".join(self.token_array[ids])
            kept = spelled == (SPACE_SYMBOL + SPACE_SYMBOL.join(units)).replace(" ", SPACE_SYMBOL)
            return () if kept else range(len(units)), False
        return self.rule.replaced(joined), joined.spaced_any

    @functools.cached_property
    def _space_codes(self) -> np.ndarray:
        """`table` as an array over the BMP (it maps no other character), code point to code point, with every
        character the normalizer makes a space (tabs, newlines, U+3000...) mapped to " "."""
        codes = np.arange(0x10000, dtype=np.uint32)
        codes[list(self.table)] = [32 if value == SPACE_SYMBOL else ord(value) for value in self.table.values()]
        return codes  # a typed "▁" is not in the table: it stays itself

    @functools.cached_property
    def _token_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """The code points of every token string laid end to end, and where each token begins."""
        return _code_points("".join(self.token_array.tolist())), exclusive_sum(self.token_lengths)

    def _spelled(self, piece_ids: np.ndarray) -> np.ndarray:
        """The code points the pieces spell, one after the other."""
        codes, token_starts = self._token_codes
        lengths = self.token_lengths[piece_ids]
        return codes[np.repeat(token_starts[piece_ids] - exclusive_sum(lengths), lengths) + np.arange(lengths.sum())]

    def _respanned(
        self,
        units: Sequence[str],
        chosen: np.ndarray,
        ids: np.ndarray,
        counts: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
    ) -> np.ndarray:
        """Whether each chosen unit's pieces spell its normalized text: "▁" + its kept characters, each normalized
        on its own (`_kept_characters`), where a kept leading space is that "▁". For those units the spans are
        made over the kept characters and moved onto the original text, into `starts` and `ends`. All chosen units
        at once, in numpy."""
        text, lengths, code, unit_of, position = _laid_out([units[index] for index in chosen.tolist()])
        position, mapped, unit_of, refused = self._kept_characters(text, lengths, code, unit_of, position)
        kept_count = np.bincount(unit_of, minlength=len(chosen))
        leading = np.zeros(len(chosen), bool)
        if self.rule is not None:  # spaces removed and the leading one kept as "▁" (else every space is kept)
            first_kept = exclusive_sum(kept_count)[kept_count > 0]
            leading[unit_of[first_kept]] = mapped[first_kept] == 32
        mapped = np.where(mapped == 32, ord(SPACE_SYMBOL), mapped)
        dummy = (~leading).astype(np.int64)
        # what the pieces spell, against the normalized text, unit by unit
        piece, piece_unit = _pieces_of_chosen(chosen, counts)
        piece_ids = ids[piece]
        spelled_length = np.bincount(piece_unit, weights=self.token_lengths[piece_ids], minlength=len(chosen))
        right = (spelled_length == kept_count + dummy) & ~(refused & (kept_count < lengths))
        right &= np.bincount(piece_unit, weights=self.unspelled[piece_ids], minlength=len(chosen)) == 0
        spelled = self._spelled(piece_ids)
        expected = np.full(len(mapped) + dummy.sum(), ord(SPACE_SYMBOL), np.uint32)
        expected[np.arange(len(mapped)) + np.cumsum(dummy)[unit_of]] = mapped  # after the unit's dummy "▁", if any
        expected_unit = np.repeat(np.arange(len(chosen)), kept_count + dummy)
        spelled_unit = np.repeat(np.arange(len(chosen)), spelled_length.astype(np.int64))
        compared = right[expected_unit]
        wrong = expected[compared] != spelled[right[spelled_unit]]
        right &= np.bincount(expected_unit[compared], weights=wrong, minlength=len(chosen)) == 0
        starts[piece], ends[piece], _ = self._bounds(kept_count, piece_ids, counts[chosen], leading)
        _moved_onto(piece, piece_unit, right, position, kept_count, starts, ends)
        return right

    def _kept_characters(
        self, text: str, lengths: np.ndarray, code: np.ndarray, unit_of: np.ndarray, position: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The characters of units laid end to end (`_laid_out`) that the normalizer keeps: where each is in its
        unit, its one-character normalization (code point, 32 for a space), and its unit; and per unit whether it
        may not lose characters.

        Each character is normalized on its own (the table), then the whitespace rule applies: spaces at the end
        removed, each run of spaces made one, which `tokenizers` aligns with the run's last character. Its
        `Precompiled` step replaces a short grapheme whose first character is in the map by that character's
        replacement alone: a CRLF becomes one space on the "\r" (its "\n" is dropped here first), and a
        zero-width (non-)joiner after a space vanishes there, while sentencepiece makes it one more space of the
        run. So a unit that loses characters is refused when it holds a zero-width (non-)joiner, a typed "▁" (the
        pipeline does not strip it at the start, sentencepiece does) or a multi-character key of the map (its
        replacement may be aligned otherwise). Without a known rule (other normalizer settings) nothing is
        removed: character for character only."""
        refused = np.zeros(len(lengths), bool)
        mapped = np.where(code < 0x10000, self._space_codes[code & 0xFFFF], code)
        if self.rule is None:
            return position, mapped, unit_of, refused
        refused[unit_of[(code == ord(SPACE_SYMBOL)) | (code == 0x200C) | (code == 0x200D)]] = True
        keys = self.rule.multi_character_key_starts(text, code)
        refused[unit_of[keys[unit_of[keys] == unit_of[keys + 1]]]] = True  # not a pair across two units
        line_feed = np.concatenate([[False], (code[1:] == 10) & (code[:-1] == 13) & (position[1:] > 0)])
        position, mapped, unit_of = position[~line_feed], mapped[~line_feed], unit_of[~line_feed]
        last = np.ones(len(unit_of), bool)
        last[:-1] = unit_of[1:] != unit_of[:-1]
        keep = _kept_by_space_rule(mapped != 32, last)
        return position[keep], mapped[keep], unit_of[keep], refused

    def _bounds(
        self, lengths: np.ndarray, ids: np.ndarray, counts: np.ndarray, leading: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat start and end arrays of every piece, each relative to its unit, as if each unit (of `lengths`
        characters) were normalized character for character; and whether each unit's pieces all spell their own
        text and end exactly at its end (units without pieces: True).

        A piece covering normalized characters s .. e-1 spans original characters s-1 .. e-1: running sums of the
        piece lengths, less the unit's own start and its dummy "▁", which shares the first character's span. A
        unit whose first character is a space (`leading`) has no dummy: that space is its "▁", and s .. e-1 spans
        s .. e-1. Made in numpy, so the per-token Python work is only the tuples transformers hands out."""
        piece_lengths = self.token_lengths[ids]
        before = np.zeros(len(ids) + 1, np.int64)  # normalized characters before each piece, and in all
        np.cumsum(piece_lengths, out=before[1:])
        firsts = exclusive_sum(counts)  # each unit's first piece (for a unit without pieces: the next unit's)
        unit_starts = before[firsts] + 1  # normalized characters before each unit, plus its dummy "▁"
        if leading is not None:
            unit_starts -= leading
        ends = before[1:] - np.repeat(unit_starts, counts)
        starts = ends - piece_lengths
        unit_ends = before[firsts + counts] - unit_starts  # where each unit's last piece ends
        first_pieces = firsts if counts.all() else firsts[counts > 0]
        starts[first_pieces] = 0
        ends[first_pieces] = np.maximum(ends[first_pieces], 1)
        single = counts == 1  # its one piece is also its first: the end moved just above applies
        unit_ends[single] = np.maximum(unit_ends[single], 1)
        kept = (unit_ends == lengths) | (counts == 0)
        unspelled = self.unspelled[ids]
        if unspelled.any():
            unspelled_before = np.zeros(len(ids) + 1, np.int64)
            np.cumsum(unspelled, out=unspelled_before[1:])
            kept &= unspelled_before[firsts + counts] == unspelled_before[firsts]
        return starts, ends, kept


class JoinedUnits:
    """Units (texts, or words each encoded on its own) laid end to end with one " " between each two, as
    `NormalizationRule` and `KeptCharacters` look at them, made once for both: `text`, its code points `code`, each
    unit's length (`lengths`) and where it starts in `text` (`bounds[u]`; `bounds[-1]` is one past the text's end,
    where a unit after the last would start). `spaced_any` says whether any unit has spaces the normalizer removes
    (at either end, in a run) or is empty ("" normalizes to "", without "▁")."""

    def __init__(self, units: Sequence[str]):
        self.units, self.text = units, " ".join(units)
        self.lengths = np.fromiter(map(len, units), np.int64, len(units))
        self.spaced_any = not all(units) or self.text[:1] == " " or self.text[-1:] == " " or "  " in self.text

    # made only when asked: a batch of plain ASCII text with single spaces looks at neither
    @functools.cached_property
    def code(self) -> np.ndarray:
        return _code_points(self.text)

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        bounds = np.zeros(len(self.lengths) + 1, np.int64)
        (self.lengths + 1).cumsum(out=bounds[1:])
        return bounds

    def spaced(self) -> set[int]:
        """The units (by index) with spaces the normalizer removes, or empty."""
        if not self.spaced_any:
            return set()
        return {
            index
            for index, unit in enumerate(self.units)
            if not unit or unit[0] == " " or unit[-1] == " " or "  " in unit
        }


class KeptCharacters:
    """Which characters of each text the normalizer keeps, for texts it changes only by removing spaces: from
    `first` (0, or a leading run's last space, the text's "▁") to the last character that is not a space, less all
    but the last space of each inner run (with which `tokenizers` aligns the run's one space). Counted as if those
    characters were contiguous from `first`, they end at `end` (`end - first` are kept; none for a text of spaces
    only). `dummy` is 1 where the normalized text starts with a dummy "▁" (it keeps a character, and the first is
    not a space), else 0. Only the `spaced` texts (by index) are looked at: in the others every character is kept.

    Made text by text in Python for a caller that spans a few texts one by one, from the `spaced` texts it names
    (`runs` then lists their inner runs as (text, start, end), texts and runs in order); else with every character
    of all texts looked at once in numpy (~15 operations), and `place` moves all texts' spans at once."""

    def __init__(self, joined: JoinedUnits, spaced: Collection[int] | None = None):
        self.runs: list[tuple[int, int, int]] = []
        self._kept_places: tuple[np.ndarray, np.ndarray] | None = None
        if spaced is None and joined.spaced_any:
            self._lay_out(joined)
            return
        self.end = joined.lengths.copy()
        self.first, self.dummy = np.zeros(len(self.end), np.int64), np.ones(len(self.end), np.int64)
        if spaced:
            self._look_at(joined.units, sorted(spaced))

    def place(self, starts: np.ndarray, ends: np.ndarray, counts: np.ndarray) -> None:
        """Spans over the kept characters (as if contiguous from `first`) moved onto the text's own, in place (text
        `t` holding `counts[t]` spans, texts in order): a start onto its character, an end after its last
        character (so past the removed spaces of a run only if that character is the run's kept space or after
        it). Only for characters laid out (made without `spaced`)."""
        if self._kept_places is None or not len(self._kept_places[1]):
            return  # not laid out, or no character kept (so no span that is right)
        kept_before, places = self._kept_places
        shift = (kept_before - self.first).repeat(counts)
        # "clip": the spans of a text that is not right (its pieces overrun its kept characters) stay in range
        starts += shift
        places.take(starts, out=starts, mode="clip")
        ends += shift - 1
        places.take(ends, out=ends, mode="clip")
        ends += 1

    def _look_at(self, texts: Sequence[str], indices: list[int]) -> None:
        firsts, ends = [], []
        for index in indices:
            text = texts[index]
            end = len(text.rstrip(" "))
            leading = len(text) - len(text.lstrip(" ")) if end else 0
            firsts.append(leading)
            if text.find("  ", leading, end) < 0:
                ends.append(end)
                continue
            runs = [(index, *run.span()) for run in _SPACE_RUN.finditer(text, leading, end)]
            ends.append(end - sum(run_end - run_start - 1 for _, run_start, run_end in runs))
            self.runs += runs
        leading, ends = np.array(firsts, np.int64), np.array(ends, np.int64)
        self.first[indices], self.end[indices] = np.maximum(leading - 1, 0), ends
        self.dummy[indices] = (leading == 0) & (ends > 0)

    def _lay_out(self, joined: JoinedUnits) -> None:
        code, bounds = joined.code, joined.bounds
        # the " " after each unit (the text's end after the last) ends its trailing run: no other end is needed
        kept = _kept_by_space_rule(code != 32)
        kept[bounds[1:-1] - 1] = False  # the " " between two units
        positions = kept.nonzero()[0]
        if not len(positions):  # spaces and empty units only: nothing kept, nothing to place
            self.first, self.dummy, self.end = (np.zeros(len(joined.lengths), np.int64) for _ in range(3))
            return
        edges = positions.searchsorted(bounds)  # characters kept before each unit, and in all
        kept_before, kept_count = edges[:-1], edges[1:] - edges[:-1]
        places = positions - bounds[:-1].repeat(kept_count)  # each kept character's place in its unit
        some = kept_count > 0
        first_kept = positions.take(kept_before, mode="clip")  # where `some` holds
        self.first = (first_kept - bounds[:-1]) * some
        self.dummy = ((code.take(first_kept) != 32) & some).astype(np.int64)
        self.end = self.first + kept_count
        self._kept_places = kept_before, places


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _laid_out(texts: list[str]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`texts` laid end to end: the joined text, each text's length, and per character its code point, its text
    (by place in `texts`) and its place in that text."""
    text = "".join(texts)
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    code = _code_points(text)
    unit_of = np.repeat(np.arange(len(texts)), lengths)
    position = np.arange(len(code)) - np.repeat(exclusive_sum(lengths), lengths)
    return text, lengths, code, unit_of, position


def _pieces_of_chosen(chosen: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices of the chosen units' pieces (unit `u` holding `counts[u]`), unit after unit in `chosen`'s
    order, and the unit of each (by place in `chosen`)."""
    piece_unit = np.repeat(np.arange(len(chosen)), counts[chosen])
    piece = np.repeat(exclusive_sum(counts)[chosen] - exclusive_sum(counts[chosen]), counts[chosen])
    return piece + np.arange(len(piece_unit)), piece_unit


def _moved_onto(
    piece: np.ndarray,
    piece_unit: np.ndarray,
    moving: np.ndarray,
    position: np.ndarray,
    kept_count: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> None:
    """Moves the spans of chosen units' pieces (`_pieces_of_chosen`) where `moving` holds for their unit, made by
    `_bounds` over the characters each unit keeps (`kept_count`, and where each is in its unit: `position`, unit
    after unit), onto the unit's own characters, in place. A piece ends after the last character it covers."""
    moved = moving[piece_unit]
    piece, base = piece[moved], exclusive_sum(kept_count)[piece_unit[moved]]
    starts[piece] = position[base + starts[piece]]
    ends[piece] = position[base + ends[piece] - 1] + 1


def _kept_by_space_rule(other: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """The characters the normalizer keeps of characters laid out unit after unit (`other`: each character's not
    being a space), by its whitespace rule: a space followed by another space or by its unit's end goes. So all but
    the last of each run go, and a unit's trailing run entirely; a leading run keeps its last space, which becomes
    the unit's "▁" (see `sentencepiece_conversion._LEADING_SPACE`). `last` (each character's being its unit's last)
    may be left out where a space follows every unit."""
    kept = other.copy()
    kept[:-1] |= other[1:]  # a space followed by a character that is not one (the last character: by the end)
    if last is not None:
        kept &= other | ~last
    return kept


def span_tuples(starts: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int]]:
    """(start, start + length) for each position, as the list of tuples transformers hands out.

    Spans starting in a text's first 512 characters and shorter than 32 (nearly all) are shared tuples made once:
    handing out a tuple already made costs neither an allocation nor, later, the cycle collector's look at it."""
    places = starts * _COMMON_LENGTHS + lengths  # a common span's place in the table of shared tuples
    if not len(places) or (lengths.max() < _COMMON_LENGTHS and places.max() < _COMMON_STARTS * _COMMON_LENGTHS):
        return _common_spans().take(places).tolist()  # every span common (two reductions, not a mask)
    common = (starts < _COMMON_STARTS) & (lengths < _COMMON_LENGTHS)
    spans = _common_spans().take(np.where(common, places, 0))
    rare = np.flatnonzero(~common)
    rare_starts = starts[rare]
    rare_spans = zip(rare_starts.tolist(), (rare_starts + lengths[rare]).tolist())
    spans[rare] = np.fromiter(rare_spans, dtype=object, count=len(rare))
    return spans.tolist()


_COMMON_STARTS, _COMMON_LENGTHS = 512, 32


@functools.cache
def _common_spans() -> np.ndarray:
    spans = ((start, start + length) for start in range(_COMMON_STARTS) for length in range(_COMMON_LENGTHS))
    return np.fromiter(spans, dtype=object, count=_COMMON_STARTS * _COMMON_LENGTHS)


def exclusive_sum(values: np.ndarray) -> np.ndarray:
    """Each position's sum of the values before it (the first 0)."""
    return values.cumsum() - values


class NormalizationRule:
    """Which texts sentencepiece's normalizer keeps as they are (but for " " -> "▁" and the dummy "▁"), from its
    precompiled character map.

    The map is a darts-clone double array of UTF-8 keys (little-endian uint32 units after a uint32 byte size; per
    unit: bits 0-7 and 31 the label, bit 8 "has a leaf", bits 10-30 the offset to the children, shifted by 8 when
    bit 9 is set; a leaf's value, bits 0-30, is where its replacement starts in the null-separated strings that
    follow the array). At each position the normalizer replaces the longest key that matches, else keeps the
    character. So a text is kept as is when no two adjacent characters of it begin a multi-character key, none is
    a one-character key replaced by something else, and (extra whitespace being removed) it holds no run of spaces
    and no space at either end. Multi-character keys need one of few second characters (combining marks, vowel
    signs, voiced sound marks), so a per-character flag finds the few places to look at."""

    def __init__(self, charsmap: bytes):
        replaced, self._key_starts = _keys_of(charsmap)
        # per code point: 1 if the map replaces it, 2 if it is a multi-character key's second character
        self._flags = np.zeros(0x110000, dtype=np.uint8)
        self._flags[list(replaced | set(_SURROGATES))] = 1
        self._flags[[ord(pair[1]) for pair in self._key_starts]] |= 2
        self._plain_ascii = bytes(code for code in range(128) if not self._flags[code])

    @classmethod
    def of(cls, normalizer_spec) -> NormalizationRule | None:
        """The rule for a sentencepiece `NormalizerSpec`, None where it does not apply (XLM-R's settings: a dummy
        prefix, escaped and deduplicated whitespace)."""
        if not (
            normalizer_spec.add_dummy_prefix
            and normalizer_spec.escape_whitespaces
            and normalizer_spec.remove_extra_whitespaces
        ):
            return None
        return cls(normalizer_spec.precompiled_charsmap)

    def changed(self, units: Sequence[str]) -> set[int]:
        """The indices of the units (texts, or words) the normalizer may change; it keeps all the others as they are."""
        joined = JoinedUnits(units)
        return joined.spaced() | self.replaced(joined)

    def replaced(self, joined: JoinedUnits) -> set[int]:
        """The units (by index) holding characters the normalizer may replace or merge; `joined.spaced()` are those
        whose spaces it removes. All units are looked at in one pass: one flag per character, in numpy (a regular
        expression over these character classes is ~50x slower), and each flagged position mapped to its unit.
        ASCII text is first looked at as bytes: deleting every byte the map leaves alone (bytes.translate, a
        tight C loop) leaves nothing in nearly all of it."""
        if joined.text.isascii() and not joined.text.encode("ascii").translate(None, self._plain_ascii):
            return set()
        flags = self._flags.take(joined.code)
        if not flags.any():  # most batches: nothing replaced, no second character of a key
            return set()
        # a replaced character, or the second character of a key (a pair across units, " " + a second character,
        # only ever counts against the unit: conservative)
        text = joined.text
        positions = np.flatnonzero(flags & 1).tolist() + (self._key_starts_flagged(text, flags) + 1).tolist()
        bounds = joined.bounds.tolist()
        return {bisect_right(bounds, position) - 1 for position in positions}

    def multi_character_key_starts(self, text: str, code_points: np.ndarray) -> np.ndarray:
        """The positions in `text` (of code points `code_points`) where a multi-character key of the map starts."""
        return self._key_starts_flagged(text, self._flags[code_points])

    def _key_starts_flagged(self, text: str, flags: np.ndarray) -> np.ndarray:
        """`multi_character_key_starts`, from the flags of the text's characters."""
        seconds = np.flatnonzero(flags[1:] & 2)
        return np.array([second for second in seconds.tolist() if text[second : second + 2] in self._key_starts], int)


def _keys_of(charsmap: bytes) -> tuple[set[int], set[str]]:
    """The code points of the one-character keys replaced by something else, and the first two characters of
    every multi-character key. The trie is walked breadth first, all nodes of a depth at once, down to the end of
    each key's second character (keys run to hundreds of thousands; the first two characters are all that
    matter)."""
    replaced: set[int] = set()
    key_starts: set[str] = set()
    if not charsmap:
        return replaced, key_starts
    size = int.from_bytes(charsmap[:4], "little")
    units = np.frombuffer(charsmap, dtype="<u4", count=size // 4, offset=4).astype(np.int64)
    replacements = charsmap[4 + size :]
    labels = units & ((1 << 31) | 0xFF)
    offsets = (units >> 10) << ((units & (1 << 9)) >> 6)
    has_leaf = ((units >> 8) & 1) == 1
    values = units & ((1 << 31) - 1)
    labels_tried = np.arange(1, 256)  # label 0 marks a leaf, not a byte
    zeros = np.zeros(1, np.int64)
    # per frontier node: its children's base, characters completed, the first character's code point, the code
    # point being read, continuation bytes left
    node, completed, first, code, left = offsets[:1], zeros, zeros, zeros, zeros
    while len(node):
        children = node[:, None] ^ labels_tried[None, :]
        present = children < len(units)
        present[present] = labels[children[present]] == np.broadcast_to(labels_tried, children.shape)[present]
        parent, column = np.nonzero(present)
        child, byte = children[parent, column], labels_tried[column]
        starts = left[parent] == 0  # a lead byte: 0xxxxxxx, 110xxxxx, 1110xxxx, 11110xxx
        kinds = [byte < 0x80, byte >= 0xF0, byte >= 0xE0]
        code_now = np.where(
            starts, np.select(kinds, [byte, byte & 0x07, byte & 0x0F], byte & 0x1F), (code[parent] << 6) | (byte & 0x3F)
        )
        left_now = np.where(starts, np.select(kinds, [0, 3, 2], 1), left[parent] - 1)
        done = left_now == 0
        completed_now = completed[parent] + done
        first_now = np.where(done & (completed_now == 1), code_now, first[parent])
        base = child ^ offsets[child]
        single = has_leaf[child] & done & (completed_now == 1)
        for code_point, value in zip(code_now[single].tolist(), values[base[single]].tolist()):
            replacement = replacements[value : replacements.index(b"\0", value)]
            if replacement != chr(code_point).encode("utf-8", "surrogatepass"):
                replaced.add(code_point)
        second = done & (completed_now == 2)
        key_starts.update(chr(a) + chr(b) for a, b in zip(first_now[second].tolist(), code_now[second].tolist()))
        deeper = ~second
        node, completed, first, code, left = (
            base[deeper],
            completed_now[deeper],
            first_now[deeper],
            code_now[deeper],
            left_now[deeper],
        )
    return replaced, key_starts


_SPACE_RUN = re.compile("  +")
_NOT_SPELLED = re.compile(r"<s>|<pad>|</s>|<unk>|<mask>|<0x[0-9A-Fa-f]{2}>")


__all__ = ["KeptCharacters", "NormalizationRule", "PieceSpans", "UnitPieces", "exclusive_sum", "span_tuples"]
