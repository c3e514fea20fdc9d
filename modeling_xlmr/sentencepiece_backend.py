"""The backend behind XLMRTokenizerFast: fairseq's ids straight from sentencepiece, `tokenizers` encodings on demand.

The `tokenizers` pipeline built by `sentencepiece_conversion` agrees with sentencepiece on ordinary text, but two
differences cannot be expressed with `tokenizers` components:

* its `Precompiled` normalizer looks the charsmap up per grapheme cluster (whole cluster if < 6 bytes, else per
  character) where sentencepiece takes the longest match at each position ("ｶﾞ" -> "ガ", "e" + two accents);
* its Unigram lattice adds scores in float64 where sentencepiece uses float32, so near-ties (long runs of one
  character) can resolve the other way.

It is also about ten times slower per text than sentencepiece's C++ encoder. So ids come from sentencepiece (plus
the fairseq dictionary mapping and the added tokens such as "<mask>"), and the padded/truncated id rows that
transformers reads are built from them directly, for texts and for pre-split words (`is_split_into_words`, each
word encoded on its own as `tokenizers` does). Offsets, word ids, sequence ids, tokens and the special-tokens mask
come from sentencepiece's pieces too (`sentencepiece_spans`) wherever its normalization maps the text character
for character, which is exactly where their spans are what `tokenizers` would report. Everything else (those
attributes for the other texts, overflowing windows, `char_to_token`...) is computed by the `tokenizers` pipeline
only when asked for, checked against sentencepiece's ids, and rebuilt from sentencepiece's pieces for the rare
text where the two disagree.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from itertools import islice
from typing import Any

import numpy as np
import sentencepiece
from tokenizers import Encoding, Tokenizer, models

from .sentencepiece_conversion import (
    FAIRSEQ_SPECIAL_TOKENS,
    FAIRSEQ_UNK_ID,
    normalizer_spec,
    renumbered_in_fairseq_order,
)
from .sentencepiece_plain import PlainSpans
from .sentencepiece_rows import LazyBatch, LazyRows, SentencePieceEncoding, template_state
from .sentencepiece_spans import NormalizationRule, PieceSpans

# Rust's `char::is_whitespace` (Unicode White_Space), which `tokenizers` uses for an added token's lstrip/rstrip.
_WHITESPACE = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


class SentencePieceReference:
    """fairseq's encoding of plain text: sentencepiece's pieces numbered by the fairseq vocabulary.

    For the released models (a dict.txt in sentencepiece's order) sentencepiece runs on the model renumbered in
    fairseq's order and its ids are fairseq's; otherwise each piece is looked up by string, as fairseq does.
    """

    def __init__(self, serialized_model: bytes, fairseq_vocab: dict[str, int]):
        self.serialized_model = serialized_model
        self.fairseq_vocab = fairseq_vocab
        self.spm_to_fairseq = None  # per-id lookup, when renumbering cannot give fairseq's ids
        self._word_cache: dict[str, list[int]] = {}  # `word_ids`' first distinct words and their ids
        renumbered = renumbered_in_fairseq_order(serialized_model)
        if renumbered is not None:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=renumbered)
            if self._numbers_match(fairseq_vocab):
                return
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=serialized_model)
        pieces = self.processor.id_to_piece(list(range(self.processor.get_piece_size())))
        self.spm_to_fairseq = [fairseq_vocab.get(piece, FAIRSEQ_UNK_ID) for piece in pieces]
        self.spm_to_fairseq[self.processor.unk_id()] = FAIRSEQ_UNK_ID

    def __getstate__(self) -> dict:  # pickles (DataLoader workers) without the words `word_ids` remembered
        return {**self.__dict__, "_word_cache": {}}

    @property
    def direct(self) -> bool:
        """Whether sentencepiece's ids are fairseq's as they come (the renumbered model)."""
        return self.spm_to_fairseq is None

    def _numbers_match(self, fairseq_vocab: dict[str, int]) -> bool:
        """Every normal piece of the renumbered model has its own id in the fairseq vocabulary."""
        first = len(FAIRSEQ_SPECIAL_TOKENS)
        pieces = self.processor.id_to_piece(list(range(first, self.processor.get_piece_size())))
        return all(fairseq_vocab.get(piece) == piece_id for piece_id, piece in enumerate(pieces, first))

    @functools.cached_property
    def normalizer(self) -> sentencepiece.SentencePieceNormalizer:
        # needed for the offsets of a text the pipeline gets wrong (rare), and once for `piece_spans`' table
        return sentencepiece.SentencePieceNormalizer(model_proto=self.serialized_model)

    @functools.cached_property
    def piece_spans(self) -> PieceSpans:
        rule = NormalizationRule.of(normalizer_spec(self.serialized_model))
        return PieceSpans(self.fairseq_vocab, self.normalizer, rule)

    @functools.cached_property
    def plain_spans(self) -> PlainSpans | None:
        # the lane for rows of one plain text; None where the normalizer's rule is not known (other settings)
        return None if self.piece_spans.rule is None else PlainSpans(self.piece_spans)

    def ids(self, texts: list[str]) -> list[list[int]]:
        threads = _encoder_threads(texts)
        if threads == 1 and len(texts) < _LIST_CALL_FROM:
            encode = self.processor.encode
            spm_ids = [encode(text) for text in texts]
        else:
            spm_ids = self.processor.encode(texts, num_threads=threads)
        if self.direct:
            return spm_ids
        lookup = self.spm_to_fairseq.__getitem__
        return [list(map(lookup, ids)) for ids in spm_ids]

    def word_ids(self, words: list[str]) -> list[list[int]]:
        """`ids` of pre-split words, each distinct word encoded once, and the first `_WORD_CACHE_SIZE` distinct words
        remembered across calls (as `tokenizers`' Unigram model does, which also stops adding when full): the cost
        of sentencepiece is per string (a short word ~2-4 us, about what a whole line costs), and most words repeat,
        within a batch and across batches. A word's ids depend on the word alone, so this is exact; equal words get
        the same list (callers only read them)."""
        cache = self._word_cache
        missing = [word for word in dict.fromkeys(words) if word not in cache]
        if not missing:
            return list(map(cache.__getitem__, words))
        found = dict(zip(missing, self.ids(missing)))
        room = _WORD_CACHE_SIZE - len(cache)
        cache.update(found if room >= len(found) else islice(found.items(), max(room, 0)))
        return [found[word] if word in found else cache[word] for word in words]

    def pieces_with_offsets(self, text: str, start: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
        """sentencepiece's pieces for `text` and the character span of each in the text (shifted by `start`)."""
        normalized, origin = self.normalizer.normalize(text, with_offsets=True)
        pieces = self.processor.encode(text, out_type=str)
        if "".join(pieces) != normalized:  # would mean the two sentencepiece objects disagree
            raise RuntimeError(f"sentencepiece pieces do not spell its normalized text for {text!r}")
        offsets, position = [], 0
        for piece in pieces:
            end = position + len(piece)
            # a piece that ends inside what one character expanded to ("ﬁ" -> "fi") spans that whole character
            last = origin[end - 1]
            origin_end = next((offset for offset in origin[end:] if offset > last), origin[-1])
            offsets.append((start + origin[position], start + origin_end))
            position = end
        if not pieces or not pieces[0].startswith("\u2581"):
            return pieces, offsets
        first = origin[1] if len(origin) > 1 else 0  # where the first kept character is
        if first > 0 and self.normalizer.normalize(f"a{text[first - 1]}a") == "\u2581a\u2581a":  # made a space
            # the dummy "▁" stands for the last of the spaces sentencepiece dropped before the first word, as
            # in the `tokenizers` pipeline (sentencepiece_conversion._LEADING_SPACE; sentencepiece_spans agrees)
            offsets[0] = (start + first - 1, start + first if pieces[0] == "\u2581" else offsets[0][1])
        elif pieces[0] == "\u2581" and len(normalized) > 1:
            # A lone dummy "▁" shares the first character's span, as `tokenizers`' Prepend aligns it
            # (sentencepiece_spans.py follows the same rule).
            first_end = next((offset for offset in origin[2:] if offset > origin[1]), origin[-1])
            offsets[0] = (start + origin[1], start + first_end)
        return pieces, offsets


class SentencePieceBackend:
    """Wraps the `tokenizers.Tokenizer` so `encode_batch` returns fairseq's ids for every text, fast.

    transformers sets the backend's truncation/padding and calls `encode_batch`; every other attribute is the
    wrapped tokenizer's. Each text's ids come from sentencepiece (added tokens such as "<mask>" cut out first, as
    the backend's added vocabulary does); `<s> A </s></s> B </s>`, truncation and padding are applied to them as the
    backend's settings say. A row whose truncation is not a plain cut (pairs, strides) is built by `tokenizers` at
    once; the others only when an attribute beyond the ids is read.
    """

    def __init__(self, backend: Tokenizer, reference: SentencePieceReference):
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_reference", reference)
        object.__setattr__(self, "_word_level", None)
        object.__setattr__(self, "_added_pattern", (None, None, [], None))
        object.__setattr__(self, "_template_state", template_state(backend.post_processor))
        object.__setattr__(self, "_lock", threading.RLock())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)

    def __reduce__(self):
        return (type(self), (self._backend, self._reference))

    def reference_ids_of_plain_text(self, text: str) -> list[int]:
        """fairseq's ids for `text` with no added token kept whole (what `split_special_tokens=True` gives)."""
        return self._reference.ids([text])[0]

    def encode(self, sequence, pair=None, is_pretokenized: bool = False, add_special_tokens: bool = True):
        item = sequence if pair is None else (sequence, pair)
        return self.encode_batch([item], add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)[0]

    def encode_batch(self, inputs, add_special_tokens: bool = True, is_pretokenized: bool = False):
        return list(self.encode_rows(inputs, add_special_tokens, is_pretokenized))

    def encode_rows(self, inputs, add_special_tokens: bool = True, is_pretokenized: bool = False) -> LazyRows:
        """`encode_batch`'s rows, each made only when read; the columns of all rows (`LazyRows.ids`...) at once."""
        if is_pretokenized:  # each text is a list of words, each word encoded on its own (as `tokenizers` does)
            items = [tuple(item) if _is_word_pair(item) else (item,) for item in inputs]
            words = [word for item in items for text in item for word in text]
        else:
            items = [
                (item,) if isinstance(item, str) else tuple(text for text in item if text is not None)
                for item in inputs
            ]
            words = [text for item in items for text in item]
        word_ids, word_segments = self._reference_ids(words, pretokenized=is_pretokenized)
        has_added_tokens = word_segments is not None
        if is_pretokenized:  # each text's ids are its words' ids, in order; only the words' piece counts are kept
            word_counts = np.fromiter(map(len, word_ids), np.int64, len(word_ids))
            parts = _joined_words(items, word_ids)
            segment_parts = _nested_like(items, word_segments) if has_added_tokens else None
        else:
            word_counts = None
            parts = _grouped_like(items, word_ids)
            segment_parts = _grouped_like(items, word_segments) if has_added_tokens else None
        batch = LazyBatch(self, items, parts, add_special_tokens, segment_parts, word_counts)
        # A template set by the user (not fairseq's) is applied by `tokenizers` itself.
        fast = batch.own_template
        rows = [_fast_ids(parts, add_special_tokens, batch.truncation) if fast else None for parts in batch.parts]
        built = [index for index, row in enumerate(rows) if row is None]  # not a plain cut: `tokenizers` builds it
        for index, (encoding, spans) in zip(built, self._build_encodings(batch, built)):
            rows[index] = SentencePieceEncoding.wrap(encoding, spans)
        batch.row_lengths = [len(row) for row in rows]
        batch.length = _padded_length(batch.padding, batch.row_lengths)
        batch.lazy_rows = [index for index, row in enumerate(rows) if isinstance(row, list)]
        return LazyRows(batch, rows)

    def _build_encodings(self, batch: LazyBatch, indices: list[int]) -> list[tuple[Encoding, tuple | None]]:
        """The `tokenizers.Encoding` of each chosen item of `batch` (ids equal to its sentencepiece ids), unpadded.

        Each comes with the character span of each word of each text where an item had to be spelled with
        sentencepiece's pieces (the pipeline disagrees with sentencepiece on one of its texts), else None.
        """
        if not indices:
            return []
        backend, results = self._backend, {}
        inputs = [batch.items[index][0] if len(batch.items[index]) == 1 else batch.items[index] for index in indices]
        pretokenized = batch.pretokenized
        with self._lock, _backend_settings(backend, batch.truncation, batch.split_special_tokens):
            encodings = backend.encode_batch(
                inputs, add_special_tokens=batch.add_special_tokens, is_pretokenized=pretokenized
            )
            doubtful = []  # truncated (the visible ids say nothing of the rest) or not the expected ids
            for position, (index, encoding) in enumerate(zip(indices, encodings)):
                if batch.own_template and encoding.ids == _fast_ids(batch.parts[index], batch.add_special_tokens, None):
                    results[index] = (encoding, None)
                else:
                    doubtful.append(position)
            untruncated = []
            if doubtful:
                with _backend_settings(backend, None, batch.split_special_tokens):
                    untruncated = backend.encode_batch(
                        [inputs[p] for p in doubtful], add_special_tokens=False, is_pretokenized=pretokenized
                    )
            for position, whole in zip(doubtful, untruncated):
                index = indices[position]
                parts = batch.parts[index]
                if whole.ids == [i for text_ids in parts for i in text_ids] and (
                    len(parts) == 1 or whole.sequence_ids.count(0) == len(parts[0])
                ):
                    results[index] = (encodings[position], None)
                else:
                    item = batch.items[index]
                    results[index] = self._encode_from_pieces(
                        item, batch.add_special_tokens, batch.truncation, pretokenized
                    )
        return [results[index] for index in indices]

    def _reference_ids(
        self, texts: list[str], pretokenized: bool = False
    ) -> tuple[list[list[int]], list[list | None] | None]:
        """fairseq's ids of each text (added tokens such as "<mask>" kept whole), and each text's parts: None for a
        text without added tokens (most), else (start, end, added token id or None) for each part; None instead of
        the list when no text holds an added token. Pre-split words go through `SentencePieceReference.word_ids`
        (equal words may then share one list of ids: callers only read them)."""
        pattern, token_ids, quick_test = self._added_tokens_pattern()
        encode = self._reference.word_ids if pretokenized else self._reference.ids
        # one search over all texts first: a token in any text is found in them joined (the reverse may not hold)
        if quick_test is None or not quick_test.search("\0".join(texts)):
            return encode(texts), None
        segments = [
            _split_added_tokens(text, pattern, token_ids) if quick_test.search(text) else None for text in texts
        ]
        if not any(segments):
            return encode(texts), None
        plain = []
        for text, parts in zip(texts, segments):
            plain += [text] if parts is None else [text[start:end] for start, end, added in parts if added is None]
        plain_ids = iter(encode(plain))
        expected = []
        for parts in segments:
            if parts is None:
                expected.append(next(plain_ids))
                continue
            ids = []
            for _, _, token_id in parts:
                ids += next(plain_ids) if token_id is None else [token_id]
            expected.append(ids)
        return expected, segments

    def _encode_from_pieces(self, pair, add_special_tokens, truncation, pretokenized: bool = False):
        """The item spelled with sentencepiece's pieces (the pipeline disagrees with it), and for each text the span
        (in its text, or in its word for pre-split words) and the word of each piece: the pre-split word, else a
        new word at every piece starting with "▁" and around added tokens (as `tokenizers`' pre-tokenizer splits)."""
        words, spans = [], []
        for text in pair:
            text_words, text_spans, word_ids = [], [], []
            for word_index, word in enumerate(text if pretokenized else [text]):
                after_added = False
                _, segments = self._reference_ids([word])
                for start, end, token_id in segments[0] if segments else [(0, len(word), None)]:
                    if token_id is None:
                        pieces, offsets = self._reference.pieces_with_offsets(word[start:end], start)
                    else:
                        pieces, offsets = [self._backend.id_to_token(token_id)], [(start, end)]
                    for piece in pieces:
                        if pretokenized:
                            word_ids.append(word_index)
                        else:
                            new = token_id is not None or after_added or piece.startswith("\u2581")
                            word_ids.append(word_ids[-1] + new if word_ids else 0)
                        after_added = token_id is not None
                    text_words += pieces
                    text_spans += offsets
            words.append(text_words)
            spans.append((text_spans, word_ids))
        # made again only when tokens were added: reading the 250k-entry vocabulary costs ~0.4 s
        vocab_size = self._backend.get_vocab_size(with_added_tokens=True)
        if self._word_level is None or self._word_level.get_vocab_size() != vocab_size:
            # each piece is a word mapped whole to its fairseq id; the template and truncation are the backend's
            vocab = self._backend.get_vocab(with_added_tokens=True)
            word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
            object.__setattr__(self, "_word_level", word_level)
        word_level = self._word_level
        word_level.post_processor = self._backend.post_processor
        _apply_settings(word_level, truncation, None)
        encoding = word_level.encode(*words, is_pretokenized=True, add_special_tokens=add_special_tokens)
        return encoding, (*spans, None)

    def _added_tokens_pattern(
        self,
    ) -> tuple[re.Pattern | None, list[int], re.Pattern | None]:
        """One regex alternative (one capturing group) per added token, longest first; their ids; a quick test."""
        added = self._backend.get_added_tokens_decoder()
        skip_special = self._backend.encode_special_tokens  # split_special_tokens=True: specials are plain text
        if skip_special:
            added = {token_id: token for token_id, token in added.items() if not token.special}
        cache_key, *cached = self._added_pattern
        if cache_key != (len(added), skip_special):
            alternatives, token_ids = [], []
            for token_id, token in sorted(added.items(), key=lambda item: -len(item[1].content)):
                left = _WHITESPACE if token.lstrip else ""
                right = _WHITESPACE if token.rstrip else ""
                alternatives.append(f"{left}({re.escape(token.content)}){right}")
                token_ids.append(token_id)
            pattern = re.compile("|".join(alternatives)) if alternatives else None
            contents = sorted({token.content for token in added.values()}, key=len, reverse=True)
            quick_test = re.compile("|".join(map(re.escape, contents))) if contents else None
            cached = [pattern, token_ids, quick_test]
            object.__setattr__(self, "_added_pattern", ((len(added), skip_special), *cached))
        return tuple(cached)


def _encoder_threads(texts: list[str]) -> int:
    """Threads for sentencepiece's batch encoder, parallel as `tokenizers` is with its own batches: the cores this
    process may use, but a second thread (and each one after it) only per `_CHARACTERS_PER_THREAD` characters, and
    one when TOKENIZERS_PARALLELISM turns `tokenizers`' parallelism off (its own spellings of false).

    Measured with sentencepiece 0.2 on a 2-core Zen 5, in us: a call per text costs ~0.85 per text + ~0.03 per
    character; the list call starts a thread pool even for one thread, ~38 + 0.2 per text + 0.03 per character;
    with two threads ~75 + 0.1 per text + 0.015 per character. So a second thread from ~2,000-2,500 characters,
    and on one thread a call per text below `_LIST_CALL_FROM` texts (64 short CLDR lines: 80 / 66 / 89; 64
    English lines, 3,927 characters: 177 / 161 / 149). On a 2-core Zen 4, one thread / two, per batch: 64 English
    lines (3,945 characters) 270 / 221, 32 lines (1,985) 152 / 154; 64 CLDR lines (4,001) 324 / 278, 32 (2,013)
    182 / 208. (The second thread used to start at 4,000 characters, which kept 64 English lines on one.)"""
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in _PARALLELISM_OFF:
        return 1
    return min(_usable_cores(), 1 + sum(map(len, texts)) // _CHARACTERS_PER_THREAD)


_CHARACTERS_PER_THREAD = 2500
_LIST_CALL_FROM = 48
_WORD_CACHE_SIZE = 10_000  # words, as `tokenizers`' Unigram cache
_PARALLELISM_OFF = ("off", "false", "f", "no", "n", "0")


@functools.cache
def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _backend_settings(backend: Tokenizer, truncation: dict | None, split_special_tokens: bool):
    """The backend's truncation (no padding) and `encode_special_tokens` as a row's call had them, for a `with`
    block; the caller's settings come back after it."""
    saved = backend.truncation, backend.padding, backend.encode_special_tokens
    _apply_settings(backend, truncation, None)
    backend.encode_special_tokens = split_special_tokens
    try:
        yield
    finally:
        _apply_settings(backend, *saved[:2])
        backend.encode_special_tokens = saved[2]


def _apply_settings(backend: Tokenizer, truncation: dict | None, padding: dict | None) -> None:
    if backend.truncation != truncation:
        backend.no_truncation() if truncation is None else backend.enable_truncation(**truncation)
    if backend.padding != padding:
        backend.no_padding() if padding is None else backend.enable_padding(**padding)


def _fast_ids(parts: list[list[int]], add_special_tokens: bool, truncation: dict | None) -> list[int] | None:
    """`<s> A </s>` / `<s> A </s></s> B </s>` (or A, A + B) as the backend would give it, None if not a plain cut."""
    if add_special_tokens:
        ids = [0, *parts[0], 2] if len(parts) == 1 else [0, *parts[0], 2, 2, *parts[1], 2]
    else:
        ids = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    if truncation is None or len(ids) <= truncation["max_length"]:
        return ids
    budget = truncation["max_length"] - (len(ids) - len(parts[0]))  # what is left for the text's own ids
    if len(parts) != 1 or truncation["stride"] or truncation["strategy"] == "only_second" or budget <= 0:
        return None  # pairs, overflow strides and errors are `tokenizers`' to decide
    kept = parts[0][:budget] if truncation["direction"] == "right" else parts[0][len(parts[0]) - budget :]
    return [0, *kept, 2] if add_special_tokens else kept


def _grouped_like(items: list[tuple], values: list) -> list[list]:
    """`values` (one per text, all items' texts in order) grouped as the items group their texts."""
    flat = iter(values)
    return [[next(flat)] if len(item) == 1 else list(islice(flat, len(item))) for item in items]


def _nested_like(items: list[tuple], values: list) -> list[list[list]]:
    """`values` (one per word, all items' words in order) nested as the items nest their texts' words."""
    flat = iter(values)
    return [[list(islice(flat, len(text))) for text in item] for item in items]


def _joined_words(items: list[tuple], word_ids: list[list[int]]) -> list[list[list[int]]]:
    """Each text's ids, its words' ids one after the other (`word_ids`: all items' words in order), grouped as the
    items group their texts. (Plain loops: 53 us for 64 English lines of words, against 84 for a chain per text.)"""
    joined, start = [], 0
    for item in items:
        texts = []
        for text in item:
            ids, end = [], start + len(text)
            for one_word in word_ids[start:end]:
                ids += one_word
            texts.append(ids)
            start = end
        joined.append(texts)
    return joined


def _is_word_pair(item) -> bool:
    """Whether a pre-split input is a pair of word lists (else it is one list of words)."""
    return len(item) == 2 and all(isinstance(text, (list, tuple)) for text in item)


def _padded_length(padding: dict | None, lengths: list[int]) -> int | None:
    """The length every row is padded to (tokenizers' rule), None without padding."""
    if padding is None or not lengths:
        return None
    length = padding["length"] or max(lengths)
    multiple = padding.get("pad_to_multiple_of")
    if multiple:
        length = -(-length // multiple) * multiple
    return length


def _split_added_tokens(text: str, pattern: re.Pattern, token_ids: list[int]) -> list[tuple]:
    """(start, end, added token id or None) parts of `text`, as the backend's added vocabulary splits it."""
    parts, position = [], 0
    for match in pattern.finditer(text):
        if match.start() > position:
            parts.append((position, match.start(), None))
        parts.append((match.start(), match.end(), token_ids[match.lastindex - 1]))
        position = match.end()
    if position < len(text) or not parts:
        parts.append((position, len(text), None))
    return parts
