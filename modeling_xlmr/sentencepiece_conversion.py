"""Sentencepiece model <-> `tokenizers` pipeline with fairseq's XLM-R ids.

fairseq's XLM-R encodes text with sentencepiece and looks every piece up *by string* in its dictionary:
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the `dict.txt` symbols (sentencepiece's order for the released
models, so each piece sits at its sentencepiece id + 1) and `<mask>` last. Pieces missing from the dictionary,
and sentencepiece's own unknown pieces, become `<unk>`.

`build_backend_tokenizer` turns a sentencepiece `ModelProto` into a `tokenizers.Tokenizer` that follows the
model's normalizer spec (transformers' own XLM-R conversion drops it: it collapses/strips whitespace the wrong
way and matches `<s>`-like control pieces inside text). `model_proto_from_tokenizer_json` goes the other way, for
vocabularies shipped only as `tokenizer.json`.

This module is copied beside saved tokenizers for remote code: it imports only the standard library,
`tokenizers` and `sentencepiece`.
"""

from __future__ import annotations

import base64
import json
import os

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import Unigram

SPACE_SYMBOL = "\u2581"  # sentencepiece's "▁"
FAIRSEQ_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
FAIRSEQ_UNK_ID = 3
MASK_TOKEN = "<mask>"

# sentencepiece_model.proto, ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM_MODEL_TYPE = 1

# Score of vocabulary entries that sentencepiece never emits from text (control/unknown/unused pieces, `<mask>`,
# dictionary-only symbols). The Unigram lattice of `tokenizers` matches every vocabulary string, so these must
# lose against any real segmentation; a score of 0 (what transformers uses) makes `<s>` typed in text win.
NEVER_MATCHED_SCORE = -1e6


def _model_pb2():
    # Imported lazily: only converting needs protobuf, loading a saved tokenizer.json does not.
    from sentencepiece import sentencepiece_model_pb2

    return sentencepiece_model_pb2


def load_model_proto(model_file: str | os.PathLike):
    """Parse a sentencepiece `.model` file into a `ModelProto`."""
    from google.protobuf.message import DecodeError

    proto = _model_pb2().ModelProto()
    with open(model_file, "rb") as handle:
        data = handle.read()
    try:
        proto.ParseFromString(data)
    except DecodeError:
        proto.Clear()
    if not proto.pieces:
        raise ValueError(f"{model_file} is not a sentencepiece model (it does not parse as one); pass a `.model` file")
    return proto


def read_fairseq_dict(dict_file: str | os.PathLike) -> list[str]:
    """Symbols of a fairseq `dict.txt`, in file order, read as fairseq's `Dictionary.add_from_file` reads it:
    "<symbol> <count>" per line, optionally followed by " #fairseq:overwrite". Blank lines are skipped."""
    symbols = []
    with open(dict_file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip().removesuffix(" #fairseq:overwrite")
            if not line:
                continue
            symbol, _, count = line.rpartition(" ")
            if not symbol or not count.isdigit():
                raise ValueError(f"{dict_file} line {line_number} is not '<symbol> <count>' (got {line[:40]!r})")
            symbols.append(symbol)
    return symbols


def fairseq_symbols(proto, dict_symbols: list[str] | None = None) -> list[str]:
    """Every fairseq id's symbol: the four specials, the dictionary (default: sentencepiece's order), `<mask>`."""
    if dict_symbols is None:
        dict_symbols = [piece.piece for piece in proto.pieces if piece.type not in (UNKNOWN, CONTROL)]
    symbols = [*FAIRSEQ_SPECIAL_TOKENS, *dict_symbols, MASK_TOKEN]
    if len(set(symbols)) != len(symbols):
        raise ValueError("the fairseq dictionary repeats a symbol or contains <s>/<pad>/</s>/<unk>/<mask>")
    return symbols


def _check_supported(proto) -> None:
    if proto.trainer_spec.model_type != UNIGRAM_MODEL_TYPE:
        raise ValueError(
            "XLM-R uses a sentencepiece unigram model; this model's type is "
            f"{proto.trainer_spec.model_type} (retrain with --model_type=unigram)"
        )
    spec = proto.normalizer_spec
    if proto.trainer_spec.treat_whitespace_as_suffix or (spec.add_dummy_prefix and not spec.escape_whitespaces):
        raise ValueError(
            "unsupported sentencepiece normalizer settings (treat_whitespace_as_suffix, or a dummy prefix "
            "without escape_whitespaces); XLM-R's model uses neither"
        )


def _normalizer(spec, escape_whitespaces: bool) -> normalizers.Normalizer:
    """sentencepiece's `Normalizer::Normalize`, step by step (normalizer.cc), but for escaping if told to skip it."""
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        # Only U+0020 counts as a space here (the charsmap has already mapped tabs, newlines, U+3000... to it), but
        # the trailing strip comes after escaping in sentencepiece, so it also removes "▁" typed at the end.
        steps.append(normalizers.Replace(Regex(rf"[ {SPACE_SYMBOL}]+\z"), ""))
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))  # aligned with the run's last character
    if spec.add_dummy_prefix:
        # `Prepend` leaves an empty string empty, as sentencepiece does for all-whitespace input
        steps.append(normalizers.Prepend(SPACE_SYMBOL))
        if spec.remove_extra_whitespaces:
            steps.append(_LEADING_SPACE)
    if escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPACE_SYMBOL))
    return normalizers.Sequence(steps)


# sentencepiece drops the spaces before the first word and prepends its dummy "▁"; `tokenizers` cannot tell where
# that "▁" came from, and transformers' XLM-R pipeline aligns it with the last of those spaces (its Metaspace
# turns that space into the "▁" and prepends none). This step gives the same segmentation and the same spans:
# the run is already one space, aligned with its last character, and replacing "▁ " by "▁" keeps that alignment.
_LEADING_SPACE = normalizers.Replace(Regex(rf"\A{SPACE_SYMBOL} "), SPACE_SYMBOL)


def _pre_tokenizer(proto) -> pre_tokenizers.PreTokenizer | None:
    # Splitting before each "▁" gives the Unigram lattice one word at a time (faster, cacheable). It cannot
    # change the best path while no piece has "▁" after its first character (split_by_whitespace=true models).
    # Metaspace also turns the spaces into "▁", more cheaply than one more normalizer pass.
    whole_words_only = all(SPACE_SYMBOL not in piece.piece[1:] for piece in proto.pieces)
    if not (whole_words_only and proto.normalizer_spec.escape_whitespaces):
        return None
    return pre_tokenizers.Metaspace(replacement=SPACE_SYMBOL, prepend_scheme="never", split=True)


def build_backend_tokenizer(proto, dict_symbols: list[str] | None = None) -> Tokenizer:
    """A `tokenizers.Tokenizer` that segments like sentencepiece and numbers pieces like fairseq's XLM-R."""
    _check_supported(proto)
    scores = {piece.piece: piece.score for piece in proto.pieces if piece.type in (NORMAL, USER_DEFINED, BYTE)}
    symbols = fairseq_symbols(proto, dict_symbols)
    vocab = [(symbol, scores.get(symbol, NEVER_MATCHED_SCORE)) for symbol in symbols]
    for special_id in range(len(FAIRSEQ_SPECIAL_TOKENS)):
        vocab[special_id] = (vocab[special_id][0], NEVER_MATCHED_SCORE)
    vocab[-1] = (MASK_TOKEN, NEVER_MATCHED_SCORE)

    tokenizer = Tokenizer(Unigram(vocab, unk_id=FAIRSEQ_UNK_ID, byte_fallback=bool(proto.trainer_spec.byte_fallback)))
    tokenizer.pre_tokenizer = _pre_tokenizer(proto)
    escape_in_normalizer = proto.normalizer_spec.escape_whitespaces and tokenizer.pre_tokenizer is None
    tokenizer.normalizer = _normalizer(proto.normalizer_spec, escape_whitespaces=escape_in_normalizer)
    prepend_scheme = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE_SYMBOL, prepend_scheme=prepend_scheme)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",  # every token type id is 0: XLM-R has a single token type
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in FAIRSEQ_SPECIAL_TOKENS]
        # fairseq's fill-mask joins "<mask>" to the text on its left with a space: the token eats that space
        + [AddedToken(MASK_TOKEN, special=True, normalized=False, lstrip=True)]
    )
    return tokenizer


def normalizer_spec(serialized_model: bytes):
    """The `NormalizerSpec` of a serialized sentencepiece model."""
    return _model_pb2().ModelProto.FromString(serialized_model).normalizer_spec


def renumbered_in_fairseq_order(serialized_model: bytes) -> bytes | None:
    """The same sentencepiece model numbered as fairseq's XLM-R dictionary numbers a dict.txt written in
    sentencepiece's order: `<s> <pad> </s> <unk>`, then every other piece at its id + 1. None when the model
    does not start with `<unk> <s> </s>`.

    A unigram model segments by the pieces' strings and scores, not their ids, so the renumbered model segments
    exactly as the original; whether its ids are a given dictionary's is the caller's check.
    """
    try:
        pb2 = _model_pb2()
    except ImportError:  # no protobuf (remote code in a bare environment): the caller looks ids up instead
        return None
    # Parsing all 250k pieces into Python objects takes most of a second, so the bytes are spliced instead:
    # protobuf appends repeated fields and merges singular messages when serialized messages are concatenated,
    # and a serializer writes field 1 (`pieces`) first. Drop the first three pieces' bytes, put the four
    # fairseq specials in front and a trainer_spec with the new special ids behind.
    start = 0
    for expected in (("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)):
        if serialized_model[start : start + 1] != b"\n":  # field 1, length-delimited
            return None
        length, payload_start = _read_varint(serialized_model, start + 1)
        piece = pb2.ModelProto.SentencePiece.FromString(serialized_model[payload_start : payload_start + length])
        if (piece.piece, piece.type) != expected:
            return None
        start = payload_start + length
    front = pb2.ModelProto()
    for symbol, piece_type in zip(FAIRSEQ_SPECIAL_TOKENS, (CONTROL, CONTROL, CONTROL, UNKNOWN)):
        front.pieces.add(piece=symbol, score=0.0, type=piece_type)
    back = pb2.ModelProto()
    trainer = back.trainer_spec
    trainer.bos_id, trainer.pad_id, trainer.eos_id, trainer.unk_id = range(len(FAIRSEQ_SPECIAL_TOKENS))
    trainer.bos_piece, trainer.pad_piece, trainer.eos_piece, trainer.unk_piece = FAIRSEQ_SPECIAL_TOKENS
    return front.SerializeToString() + serialized_model[start:] + back.SerializeToString()


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """A protobuf base-128 varint at `position`: (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7


def is_converted_here(tokenizer: Tokenizer) -> bool:
    """Whether a loaded tokenizer.json came from this version of `build_backend_tokenizer` (its normalizer has the
    dummy prefix followed by the leading-space step).

    Directories such as transformers' XLM-R checkpoints hold sentencepiece.bpe.model *and* a tokenizer.json from
    transformers' conversion, which must be converted again rather than trusted; so is one saved by an earlier
    version of this class, whose pipeline dropped the leading spaces (same ids, other spans).
    """
    if tokenizer.normalizer is None:
        return False
    steps = json.loads(tokenizer.normalizer.__getstate__()).get("normalizers") or []
    prepend = {"type": "Prepend", "prepend": SPACE_SYMBOL}
    marker = [prepend, json.loads(_LEADING_SPACE.__getstate__())]
    return any(steps[index : index + 2] == marker for index in range(len(steps) - 1))


def model_proto_from_tokenizer_json(tokenizer_json: dict | str | os.PathLike):
    """Rebuild XLM-R's sentencepiece `ModelProto` from a `tokenizer.json` holding fairseq's Unigram vocabulary.

    The fairseq vocabulary is sentencepiece's shifted by one (`<unk>`, `<s>`, `</s>` were sentencepiece ids 0-2);
    the normalizer's precompiled charsmap is sentencepiece's `nmt_nfkc` table.
    """
    if not isinstance(tokenizer_json, dict):
        with open(tokenizer_json, encoding="utf-8") as handle:
            tokenizer_json = json.load(handle)
    model = tokenizer_json.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "Unigram" or not vocab:
        raise ValueError("tokenizer.json must hold a Unigram model (XLM-R's vocabulary)")
    head = [piece for piece, _ in vocab[: len(FAIRSEQ_SPECIAL_TOKENS)]]
    if tuple(head) != FAIRSEQ_SPECIAL_TOKENS or vocab[-1][0] != MASK_TOKEN:
        raise ValueError("tokenizer.json vocabulary must start with <s> <pad> </s> <unk> and end with <mask>")

    pb2 = _model_pb2()
    proto = pb2.ModelProto()
    for piece, piece_type in (("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=piece_type)
    for piece, score in vocab[len(FAIRSEQ_SPECIAL_TOKENS) : -1]:
        proto.pieces.add(piece=piece, score=score, type=NORMAL)

    trainer = proto.trainer_spec
    trainer.model_type = UNIGRAM_MODEL_TYPE
    trainer.vocab_size = len(proto.pieces)
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    trainer.byte_fallback = bool(model.get("byte_fallback", False))

    spec = proto.normalizer_spec
    spec.name = "nmt_nfkc"
    charsmap = _find_precompiled_charsmap(tokenizer_json.get("normalizer"))
    if charsmap is None:
        raise ValueError("tokenizer.json has no Precompiled normalizer (sentencepiece's charsmap) to rebuild from")
    spec.precompiled_charsmap = base64.b64decode(charsmap)
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = True
    return proto


def _find_precompiled_charsmap(normalizer: dict | None) -> str | None:
    if not normalizer:
        return None
    if normalizer.get("type") == "Precompiled":
        return normalizer.get("precompiled_charsmap")
    for child in normalizer.get("normalizers", []):
        found = _find_precompiled_charsmap(child)
        if found is not None:
            return found
    return None
