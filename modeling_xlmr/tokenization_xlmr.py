"""XLM-R's tokenizer: a `tokenizers` pipeline whose ids are fairseq's (sentencepiece + dictionary) on every input.

The `tokenizers` pipeline built by `sentencepiece_conversion` agrees with sentencepiece on ordinary text, but two
differences cannot be expressed with `tokenizers` components:

* its `Precompiled` normalizer looks the charsmap up per grapheme cluster (whole cluster if < 6 bytes, else per
  character) where sentencepiece takes the longest match at each position ("ｶﾞ" -> "ガ", "e" + two accents);
* its Unigram lattice adds scores in float64 where sentencepiece uses float32, so near-ties (long runs of one
  character) can resolve the other way.

So every text is also encoded by sentencepiece itself (C++, faster than the `tokenizers` pass) and the two id
sequences are compared; a text whose ids differ is re-encoded from sentencepiece's pieces. The `tokenizers` output
is kept wherever it is right, which is nearly always.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sentencepiece
from tokenizers import Tokenizer, models
from transformers import AddedToken, PreTrainedTokenizerFast

from .sentencepiece_conversion import (
    FAIRSEQ_UNK_ID,
    build_backend_tokenizer,
    is_converted_here,
    load_model_proto,
    model_proto_from_tokenizer_json,
    read_fairseq_dict,
)

VOCAB_FILES_NAMES = {
    "vocab_file": "sentencepiece.bpe.model",
    "dict_file": "dict.txt",
    "tokenizer_file": "tokenizer.json",
}

# Rust's `char::is_whitespace` (Unicode White_Space), which `tokenizers` uses for an added token's lstrip/rstrip.
_WHITESPACE = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


class SentencePieceReference:
    """fairseq's encoding of plain text: sentencepiece ids looked up by piece string in the fairseq vocabulary."""

    def __init__(self, serialized_model: bytes, fairseq_vocab: dict[str, int]):
        self.serialized_model = serialized_model
        self.fairseq_vocab = fairseq_vocab
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=serialized_model)
        pieces = self.processor.id_to_piece(list(range(self.processor.get_piece_size())))
        self.spm_to_fairseq = [fairseq_vocab.get(piece, FAIRSEQ_UNK_ID) for piece in pieces]
        self.spm_to_fairseq[self.processor.unk_id()] = FAIRSEQ_UNK_ID
        self._normalizer = None

    @property
    def normalizer(self) -> sentencepiece.SentencePieceNormalizer:
        if self._normalizer is None:  # only needed to re-encode a text, which is rare
            self._normalizer = sentencepiece.SentencePieceNormalizer(model_proto=self.serialized_model)
        return self._normalizer

    def ids(self, texts: list[str]) -> list[list[int]]:
        lookup = self.spm_to_fairseq.__getitem__
        return [list(map(lookup, ids)) for ids in self.processor.encode(texts, num_threads=1)]

    def pieces_with_offsets(self, text: str, start: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
        """sentencepiece's pieces for `text` and the character span of each in the text (shifted by `start`)."""
        normalized, origin = self.normalizer.normalize(text, with_offsets=True)
        pieces = self.processor.encode(text, out_type=str)
        if "".join(pieces) != normalized:  # would mean the two sentencepiece objects disagree
            raise RuntimeError(f"sentencepiece pieces do not spell its normalized text for {text!r}")
        offsets, position = [], 0
        for piece in pieces:
            end = position + len(piece)
            offsets.append((start + origin[position], start + origin[end]))
            position = end
        return pieces, offsets


class VerifiedBackend:
    """Wraps the `tokenizers.Tokenizer` so `encode_batch` returns fairseq's ids for every text.

    transformers sets the backend's truncation/padding and calls `encode_batch` on it; every other attribute is the
    wrapped tokenizer's. The batch is encoded as asked, then each encoding's text ids (specials and padding cut off)
    are compared with sentencepiece's. Encodings that differ, or were truncated (their text is not all visible),
    are redone: each text encoded alone and checked, re-encoded from sentencepiece's pieces if still different,
    then truncated, given `<s> A </s></s> B </s>` and padded by the same backend settings.
    """

    def __init__(self, backend: Tokenizer, reference: SentencePieceReference):
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_reference", reference)
        object.__setattr__(self, "_word_level", None)
        object.__setattr__(self, "_added_pattern", (None, [], None, []))
        object.__setattr__(self, "_local", threading.local())
        object.__setattr__(self, "_pool", (None, None))  # (process id, executor): a forked child makes its own

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)

    def __reduce__(self):
        return (type(self), (self._backend, self._reference))

    @property
    def exact_offsets(self) -> dict[int, list]:
        """Character spans of the re-encoded texts of the last `encode_batch` call, by `id()` of its encoding."""
        return getattr(self._local, "exact_offsets", {})

    def encode_batch(self, inputs, add_special_tokens: bool = True, is_pretokenized: bool = False):
        backend = self._backend
        self._local.exact_offsets = {}
        if is_pretokenized:  # words chosen by the caller: sentencepiece has no equivalent to check against
            return backend.encode_batch(inputs, add_special_tokens=add_special_tokens, is_pretokenized=True)
        pairs = [
            (item,) if isinstance(item, str) else tuple(text for text in item if text is not None) for item in inputs
        ]
        texts = [text for pair in pairs for text in pair]
        # sentencepiece runs on a helper thread while `tokenizers` (which releases the GIL) encodes the batch
        added = self._added_tokens_pattern()  # read here: the helper thread must not touch the backend
        pending = self._executor().submit(self._reference_ids, texts, added) if len(texts) >= 16 else None
        encodings = backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        expected, _ = pending.result() if pending is not None else self._reference_ids(texts, added)
        expected = iter(expected)
        content = self._content_reader(add_special_tokens)
        redo = []
        for index, (pair, encoding) in enumerate(zip(pairs, encodings)):
            wanted = [next(expected) for _ in pair]
            # A truncated encoding hides part of its text: check those on the untruncated path.
            if content is None or encoding.overflowing or content(encoding, len(pair) == 2) != wanted:
                redo.append(index)
        if redo:
            self._redo(encodings, [pairs[index] for index in redo], redo, add_special_tokens)
        return encodings

    def _executor(self) -> ThreadPoolExecutor:
        process_id, pool = self._pool
        if pool is None or process_id != os.getpid():  # threads do not survive a fork
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xlmr-sentencepiece")
            object.__setattr__(self, "_pool", (os.getpid(), pool))
        return pool

    def reference_ids_of_plain_text(self, text: str) -> list[int]:
        """fairseq's ids for `text` with no added token kept whole (what `split_special_tokens=True` gives)."""
        return self._reference.ids([text])[0]

    def encode(self, sequence, pair=None, is_pretokenized: bool = False, add_special_tokens: bool = True):
        item = sequence if pair is None else (sequence, pair)
        return self.encode_batch([item], add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)[0]

    def _content_reader(self, add_special_tokens: bool):
        """A function giving an encoding's ids per text (specials and padding cut off), or None if unsure how."""
        post_processor = self._backend.post_processor
        if add_special_tokens and (
            post_processor is None
            or (post_processor.num_special_tokens_to_add(False), post_processor.num_special_tokens_to_add(True))
            != (2, 4)  # <s> A </s>  and  <s> A </s></s> B </s>
        ):
            return None
        padding = self._backend.padding
        left_padded = padding is not None and padding["direction"] == "left"
        skip = 1 if add_special_tokens else 0

        def content(encoding, is_pair: bool) -> list[list[int]]:
            ids, pads = encoding.ids, encoding.attention_mask.count(0)
            body = ids[pads:] if left_padded else ids[: len(ids) - pads]
            if not is_pair:
                return [body[skip : len(body) - skip]]
            first = encoding.sequence_ids.count(0)
            return [body[skip : skip + first], body[3 * skip + first : len(body) - skip]]

        return content

    def _redo(self, encodings, pairs, indices, add_special_tokens: bool) -> None:
        """Re-encode `pairs` untruncated and checked text by text, then truncate, add specials and pad."""
        backend, exact_offsets = self._backend, self._local.exact_offsets
        checked, spans = self._encode_texts([text for pair in pairs for text in pair])
        checked, spans = iter(checked), iter(spans)
        for index, pair in zip(indices, pairs):
            parts = [(next(checked), next(spans)) for _ in pair]
            second = parts[1][0] if len(parts) == 2 else None
            encoding = backend.post_process(parts[0][0], second, add_special_tokens=add_special_tokens)
            if any(part_spans is not None for _, part_spans in parts):
                exact_offsets[id(encoding)] = tuple(part_spans for _, part_spans in parts) + (None,)
            encodings[index] = encoding
        self._pad_batch(encodings)

    def _reference_ids(self, texts: list[str], added: tuple | None = None) -> tuple[list[list[int]], list[list]]:
        """fairseq's ids of each text (added tokens such as "<mask>" kept whole), and the text's parts."""
        contents, pattern, token_ids = added or self._added_tokens_pattern()
        segments = [
            _split_added_tokens(text, pattern, token_ids)
            if any(content in text for content in contents)  # cheap test first: most texts have none
            else [(0, len(text), None)]
            for text in texts
        ]
        plain = [
            text[start:end]
            for text, parts in zip(texts, segments)
            for start, end, token_id in parts
            if token_id is None
        ]
        plain_ids = iter(self._reference.ids(plain))
        expected = []
        for parts in segments:
            if len(parts) == 1 and parts[0][2] is None:
                expected.append(next(plain_ids))
                continue
            ids = []
            for _, _, token_id in parts:
                ids += next(plain_ids) if token_id is None else [token_id]
            expected.append(ids)
        return expected, segments

    def _encode_texts(self, texts: list[str]):
        """Encodings without special tokens; those sentencepiece disagrees with come from its own pieces."""
        backend = self._backend
        truncation, padding = backend.truncation, backend.padding
        backend.no_truncation()
        backend.no_padding()
        try:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
        finally:
            if truncation is not None:
                backend.enable_truncation(**truncation)
            if padding is not None:
                backend.enable_padding(**padding)

        expected, segments = self._reference_ids(texts)
        spans = [None] * len(texts)
        for index, (encoding, ids) in enumerate(zip(encodings, expected)):
            if encoding.ids != ids:
                encodings[index], spans[index] = self._encode_from_pieces(texts[index], segments[index])
        return encodings, spans

    def _encode_from_pieces(self, text: str, parts):
        words, spans = [], []
        for start, end, token_id in parts:
            if token_id is None:
                pieces, offsets = self._reference.pieces_with_offsets(text[start:end], start)
                words += pieces
                spans += offsets
            else:
                words.append(self._backend.id_to_token(token_id))
                spans.append((start, end))
        if self._word_level is None:  # maps each piece to its fairseq id, whole
            word_level = Tokenizer(models.WordLevel(self._reference.fairseq_vocab, unk_token="<unk>"))
            object.__setattr__(self, "_word_level", word_level)
        encoding = self._word_level.encode(words, is_pretokenized=True, add_special_tokens=False)
        return encoding, spans

    def _added_tokens_pattern(self) -> tuple[list[str], re.Pattern | None, list[int]]:
        """The added tokens' texts, and one regex alternative (one capturing group) per token, longest first."""
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
            cached = [[token.content for token in added.values()], pattern, token_ids]
            object.__setattr__(self, "_added_pattern", ((len(added), skip_special), *cached))
        return tuple(cached)

    def _pad_batch(self, encodings) -> None:
        padding = self._backend.padding
        if padding is None or not encodings:
            return
        length = padding["length"] or max(len(encoding.ids) for encoding in encodings)
        multiple = padding.get("pad_to_multiple_of")
        if multiple:
            length = -(-length // multiple) * multiple
        for encoding in encodings:
            encoding.pad(
                length,
                direction=padding["direction"],
                pad_id=padding["pad_id"],
                pad_type_id=padding["pad_type_id"],
                pad_token=padding["pad_token"],
            )


class XLMRTokenizerFast(PreTrainedTokenizerFast):
    """XLM-R tokenizer with fairseq's ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, pieces, `<mask>` last.

    Loads a fairseq model directory (`sentencepiece.bpe.model`, optionally `dict.txt`, whose order then fixes
    the ids) or a directory saved by this class (`tokenizer.json` + `sentencepiece.bpe.model`). A tokenizer.json
    from elsewhere (transformers' conversion of XLM-R) is not trusted: with the sentencepiece model beside it, that
    model is converted again; alone, it only lends its vocabulary and charsmap to rebuild the model from.

    Literal special-token text such as "<mask>" is the special token unless `split_special_tokens=True`, which
    tokenizes it like sentencepiece does. `verify_with_sentencepiece=False` skips the sentencepiece check (faster
    on few cores; ids then differ from fairseq's on the rare inputs described at the top of this module).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class = None

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        dict_file: str | None = None,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        sep_token: str = "</s>",
        cls_token: str = "<s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        mask_token: str | AddedToken = "<mask>",
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = False,
        verify_with_sentencepiece: bool = True,
        **kwargs,
    ):
        if isinstance(mask_token, str):  # fairseq's fill-mask puts a space before "<mask>": the token takes it
            mask_token = AddedToken(mask_token, lstrip=True, rstrip=False, special=True)
        has_tokenizer_file = tokenizer_file is not None and os.path.isfile(tokenizer_file)
        has_vocab_file = vocab_file is not None and os.path.isfile(vocab_file)
        if not has_tokenizer_file and not has_vocab_file:
            # ValueError, not OSError: transformers replaces an OSError raised here with a generic message
            raise ValueError(
                "XLMRTokenizerFast needs a directory with tokenizer.json or a fairseq sentencepiece.bpe.model "
                f"(got vocab_file={vocab_file!r}, tokenizer_file={tokenizer_file!r})"
            )
        backend = Tokenizer.from_file(tokenizer_file) if has_tokenizer_file else None
        if backend is not None and has_vocab_file and is_converted_here(backend):  # saved by this class
            serialized_model = _read_bytes(vocab_file)
        else:
            if has_vocab_file:  # a fairseq directory (or transformers' checkpoint: its tokenizer.json is redone)
                proto = load_model_proto(vocab_file)
            else:  # a tokenizer.json from elsewhere (e.g. transformers' conversion): keep only the vocabulary
                proto = model_proto_from_tokenizer_json(tokenizer_file)
            dict_symbols = read_fairseq_dict(dict_file) if dict_file and os.path.isfile(dict_file) else None
            backend = build_backend_tokenizer(proto, dict_symbols)
            serialized_model = proto.SerializeToString()
            kwargs.pop("added_tokens_decoder", None)  # read from that tokenizer.json: `<mask>` may lack its lstrip
        for key in ("vocab", "merges", "tokenizer_object", "post_processor", "_spm_precompiled_charsmap"):
            kwargs.pop(key, None)  # transformers' own conversion results: this class builds its backend itself

        self._tokenizer = backend  # given this way, not as `tokenizer_object`, which would deep-copy it
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            verify_with_sentencepiece=verify_with_sentencepiece,
            **kwargs,
        )
        self.vocab_file = vocab_file
        self._serialized_model = serialized_model
        self.verify_with_sentencepiece = verify_with_sentencepiece
        if verify_with_sentencepiece:
            reference = SentencePieceReference(serialized_model, self._tokenizer.get_vocab(with_added_tokens=False))
            self._tokenizer = VerifiedBackend(self._tokenizer, reference)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs):
        # The files are read in `__init__`; transformers' generic conversion would rebuild a divergent backend.
        return kwargs

    @property
    def can_save_slow_tokenizer(self) -> bool:
        return False

    def update_post_processor(self):
        # The backend's template (<s> A </s></s> B </s>, token type 0 everywhere) is fairseq's; keep it.
        return

    def _convert_encoding(self, encoding, return_offsets_mapping: bool = False, **kwargs):
        encoding_dict, encodings = super()._convert_encoding(
            encoding, return_offsets_mapping=return_offsets_mapping, **kwargs
        )
        exact_offsets = getattr(self._tokenizer, "exact_offsets", None) if return_offsets_mapping else None
        spans = exact_offsets.get(id(encoding)) if exact_offsets else None
        if spans is not None:
            # Re-encoded texts went through `tokenizers` as pre-split pieces: put back each piece's span.
            encoding_dict["offset_mapping"] = [_piece_offsets(part, spans) for part in encodings]
        return encoding_dict, encodings

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        if isinstance(self._tokenizer, VerifiedBackend):  # the whole text as sentencepiece sees it
            return self._tokenizer.reference_ids_of_plain_text(text)
        return super()._encode_without_added_tokens(text)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        # The sentencepiece model goes beside tokenizer.json: fairseq's converter and this class's checks use it.
        model_file = os.path.join(
            str(save_directory), (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        )
        partial_file = model_file + ".partial"  # never leave a truncated model behind
        with open(partial_file, "wb") as handle:
            handle.write(self._serialized_model)
        os.replace(partial_file, model_file)
        return file_names + (model_file,)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()


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


def _piece_offsets(encoding, spans: tuple[list | None, list | None]) -> list[tuple[int, int]]:
    offsets = []
    for offset, word, sequence in zip(encoding.offsets, encoding.word_ids, encoding.sequence_ids):
        sequence_spans = spans[sequence] if sequence is not None else None
        offsets.append(sequence_spans[word] if sequence_spans is not None and word is not None else offset)
    return offsets


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


XLMRTokenizerFast.register_for_auto_class("AutoTokenizer")
