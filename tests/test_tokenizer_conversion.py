"""sentencepiece model <-> tokenizer.json conversion: the derived real model, dictionaries, clear errors."""

import base64
import json
import struct

import pytest
import sentencepiece

from modeling_xlmr.sentencepiece_conversion import (
    NEVER_MATCHED_SCORE,
    build_backend_tokenizer,
    fairseq_symbols,
    load_model_proto,
    model_proto_from_tokenizer_json,
    read_fairseq_dict,
)


def float32s(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


@pytest.fixture(scope="module")
def shipped(real_tokenizer_json) -> dict:
    with open(real_tokenizer_json, encoding="utf-8") as handle:
        return json.load(handle)


def test_derived_model_is_xlmr_sentencepiece(real_spm_model, shipped):
    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    assert processor.get_piece_size() == 250000
    assert processor.is_unknown(0) and processor.is_control(1) and processor.is_control(2)
    assert processor.encode("Hello world!", out_type=str) == ["\u2581Hello", "\u2581world", "!"]
    assert [i + 1 for i in processor.encode("Hello world!")] == [35378, 8999, 38]
    shipped_vocab = shipped["model"]["vocab"]
    for piece_id in (3, 1000, 249999):  # spm id + 1 = fairseq id, same score
        assert [processor.id_to_piece(piece_id), processor.get_score(piece_id)] == pytest.approx(
            shipped_vocab[piece_id + 1]
        )


def test_derived_model_converts_back_to_the_shipped_vocabulary(real_spm_model, shipped):
    proto = load_model_proto(real_spm_model)
    charsmap = shipped["normalizer"]["normalizers"][0]["precompiled_charsmap"]
    assert proto.normalizer_spec.precompiled_charsmap == base64.b64decode(charsmap)

    converted = json.loads(build_backend_tokenizer(proto).to_str())
    ours, theirs = converted["model"]["vocab"], shipped["model"]["vocab"]
    assert [piece for piece, _ in ours] == [piece for piece, _ in theirs]
    # sentencepiece stores float32 scores; the two JSON writers print their float64 widening differently
    assert float32s([score for _, score in ours[4:-1]]) == float32s([score for _, score in theirs[4:-1]])
    # pieces sentencepiece never emits from text must never win a segmentation
    assert {score for _, score in ours[:4] + ours[-1:]} == {NEVER_MATCHED_SCORE}
    assert converted["model"]["unk_id"] == 3


def test_dict_file_parsing(tmp_path):
    (tmp_path / "dict.txt").write_text("\u2581the 120\n, 99\nab cd 3\n", encoding="utf-8")
    assert read_fairseq_dict(tmp_path / "dict.txt") == ["\u2581the", ",", "ab cd"]
    (tmp_path / "bad.txt").write_text("\u2581the 120\nnocount\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt line 2 is not '<symbol> <count>'"):
        read_fairseq_dict(tmp_path / "bad.txt")


def test_duplicate_dictionary_symbols_are_rejected(real_spm_model):
    proto = load_model_proto(real_spm_model)
    with pytest.raises(ValueError, match="repeats a symbol"):
        fairseq_symbols(proto, ["a", "b", "a"])
    with pytest.raises(ValueError, match="repeats a symbol"):
        fairseq_symbols(proto, ["a", "<mask>"])


def test_non_unigram_model_is_rejected(tokenizer_corpus, tmp_path):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus[:2000]),
        model_prefix=str(tmp_path / "bpe"),
        model_type="bpe",
        vocab_size=300,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="unigram"):
        build_backend_tokenizer(load_model_proto(tmp_path / "bpe.model"))


def test_tokenizer_json_must_hold_xlmr_unigram(shipped, tmp_path):
    wordpiece = {"model": {"type": "WordPiece", "vocab": {"a": 0}}}
    with pytest.raises(ValueError, match="Unigram"):
        model_proto_from_tokenizer_json(wordpiece)
    shifted = {**shipped, "model": {**shipped["model"], "vocab": shipped["model"]["vocab"][1:]}}
    with pytest.raises(ValueError, match="must start with <s> <pad> </s> <unk>"):
        model_proto_from_tokenizer_json(shifted)
    with pytest.raises(ValueError, match="Precompiled"):
        model_proto_from_tokenizer_json({**shipped, "normalizer": None})
