"""XLMRTokenizerFast's ids equal fairseq's (sentencepiece + dictionary lookup) on a multilingual corpus.

The reference is computed independently: `sentencepiece.SentencePieceProcessor.encode` on the model, then each
piece looked up by string in fairseq's dictionary (`<s> <pad> </s> <unk>`, dict.txt, `<mask>`), as fairseq's
`Dictionary.encode_line` does.
"""

import random

import pytest
import sentencepiece
from transformers import XLMRobertaTokenizer

from modeling_xlmr import XLMRTokenizerFast
from modeling_xlmr.sentencepiece_conversion import (
    build_backend_tokenizer,
    load_model_proto,
)
from tests.support.corpus import ADVERSARIAL_STRINGS


def fairseq_reference(model_file: str, symbols: list[str] | None = None):
    """text -> fairseq ids (with <s> ... </s>), from sentencepiece and a dict.txt-style symbol list."""
    processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
    if symbols is None:  # the released models: dict.txt is sentencepiece's order after <unk> <s> </s>
        symbols = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    index = {symbol: i for i, symbol in enumerate(["<s>", "<pad>", "</s>", "<unk>", *symbols, "<mask>"])}

    def encode(texts: list[str]) -> list[list[int]]:
        return [[0, *(index.get(piece, 3) for piece in pieces), 2] for pieces in processor.encode(texts, out_type=str)]

    return encode


def mismatches(tokenizer, reference, texts, **kwargs) -> list[str]:
    ours = tokenizer(texts, **kwargs)["input_ids"]
    return [text for text, ids, expected in zip(texts, ours, reference(texts)) if ids != expected]


def test_real_vocabulary_corpus_parity(real_tokenizer, real_spm_model, tokenizer_corpus):
    assert real_tokenizer.backend_tokenizer._reference.direct  # sentencepiece renumbered in fairseq's order
    assert mismatches(real_tokenizer, fairseq_reference(real_spm_model), tokenizer_corpus) == []


def test_real_vocabulary_adversarial_parity(real_tokenizer, real_spm_model):
    texts = list(ADVERSARIAL_STRINGS)
    # split_special_tokens=True: typed "<mask>" is plain text, as sentencepiece sees it
    assert mismatches(real_tokenizer, fairseq_reference(real_spm_model), texts, split_special_tokens=True) == []


def test_trained_model_corpus_and_adversarial_parity(trained_fairseq_dir, tokenizer_corpus):
    tokenizer = XLMRTokenizerFast.from_pretrained(trained_fairseq_dir)
    reference = fairseq_reference(f"{trained_fairseq_dir}/sentencepiece.bpe.model")
    texts = tokenizer_corpus + list(ADVERSARIAL_STRINGS)
    assert mismatches(tokenizer, reference, texts, split_special_tokens=True) == []


def test_dict_order_decides_ids(trained_fairseq_dir, tokenizer_corpus, tmp_path):
    """fairseq looks pieces up by string: a reordered dict.txt (and a piece it lacks) must change the ids."""
    processor = sentencepiece.SentencePieceProcessor(model_file=f"{trained_fairseq_dir}/sentencepiece.bpe.model")
    symbols = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    random.Random(0).shuffle(symbols)
    dropped = symbols.pop()  # fairseq maps a piece missing from dict.txt to <unk>
    (tmp_path / "dict.txt").write_text("".join(f"{symbol} 7\n" for symbol in symbols), encoding="utf-8")
    (tmp_path / "sentencepiece.bpe.model").write_bytes(processor.serialized_model_proto())

    tokenizer = XLMRTokenizerFast.from_pretrained(str(tmp_path))
    assert not tokenizer.backend_tokenizer._reference.direct  # looked up piece by piece
    reference = fairseq_reference(str(tmp_path / "sentencepiece.bpe.model"), symbols)
    texts = tokenizer_corpus[::5] + list(ADVERSARIAL_STRINGS) + [dropped.replace("\u2581", " ")]
    assert mismatches(tokenizer, reference, texts, split_special_tokens=True) == []
    assert tokenizer.convert_tokens_to_ids(symbols[0]) == 4
    assert tokenizer.mask_token_id == len(symbols) + 4 == len(tokenizer) - 1


@pytest.fixture(scope="module")
def real_backend(real_spm_model):
    """The `tokenizers` pipeline converted from the real model, without the sentencepiece check."""
    return build_backend_tokenizer(load_model_proto(real_spm_model))


def test_backend_fixes_transformers_conversion(real_tokenizer_json, real_spm_model, real_backend):
    """The `tokenizers` pipeline alone already fixes what transformers' XLM-R tokenizer gets wrong."""
    texts = ["Hello  world ", "trailing spaces   ", "\u3000x\u3000", "a <s> b"]
    expected = fairseq_reference(real_spm_model)(texts)
    stock = XLMRobertaTokenizer(tokenizer_file=real_tokenizer_json).backend_tokenizer
    stock.encode_special_tokens = real_backend.encode_special_tokens = True
    try:
        assert all(encoding.ids != ids for encoding, ids in zip(stock.encode_batch(texts), expected))
        assert [encoding.ids for encoding in real_backend.encode_batch(texts)] == expected
    finally:
        real_backend.encode_special_tokens = False


def test_backend_alone_matches_on_the_corpus(real_spm_model, real_backend, tokenizer_corpus):
    """Without the sentencepiece check the `tokenizers` pipeline is already exact on real text."""
    ours = [encoding.ids for encoding in real_backend.encode_batch(tokenizer_corpus)]
    expected = fairseq_reference(real_spm_model)(tokenizer_corpus)
    assert [text for text, a, b in zip(tokenizer_corpus, ours, expected) if a != b] == []


def test_dict_in_sentencepiece_order_with_extra_symbols(trained_fairseq_dir, tokenizer_corpus, tmp_path):
    """dict.txt in sentencepiece's order (as fairseq's preprocessing writes it), plus symbols sentencepiece never
    emits (fairseq pads some dictionaries with `madeupword` entries): sentencepiece is renumbered in fairseq's
    order (no lookup per id) and must still segment exactly as the original model."""
    processor = sentencepiece.SentencePieceProcessor(model_file=f"{trained_fairseq_dir}/sentencepiece.bpe.model")
    symbols = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    symbols += [f"madeupword{i:04d}" for i in range(3)]
    (tmp_path / "dict.txt").write_text("".join(f"{symbol} 7\n" for symbol in symbols), encoding="utf-8")
    (tmp_path / "sentencepiece.bpe.model").write_bytes(processor.serialized_model_proto())

    tokenizer = XLMRTokenizerFast.from_pretrained(str(tmp_path))
    assert tokenizer.backend_tokenizer._reference.direct  # the renumbered model answers with fairseq's ids
    assert tokenizer.mask_token_id == len(symbols) + 4
    reference = fairseq_reference(str(tmp_path / "sentencepiece.bpe.model"), symbols)
    texts = tokenizer_corpus + list(ADVERSARIAL_STRINGS) + ["\x00 unknown: \U0001f9ff\U0001fae8"]
    assert mismatches(tokenizer, reference, texts, split_special_tokens=True) == []
