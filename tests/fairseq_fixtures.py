"""pytest fixtures for fairseq-format XLM-R checkpoints (the builders live in `conversion.fairseq_format`).

Import the fixtures into a test module: `from fairseq_fixtures import fairseq_checkpoint, tiny_sentencepiece`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conversion.fairseq_format import (
    build_fairseq_checkpoint,
    pack_fairseq_archive,
    random_fairseq_state_dict,
    train_tiny_sentencepiece,
    write_fairseq_dictionary,
)
from modeling_xlmr.configuration_xlmr import XLMRConfig

TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_config(**overrides) -> XLMRConfig:
    return XLMRConfig(**{**TINY_SIZES, **overrides})


def expected_fairseq_state(
    directory: Path, config: XLMRConfig, heads: dict[str, int] | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The canonical fairseq weights `build_fairseq_checkpoint(directory, config, seed=seed)` wrote, whatever
    the layout or key spelling it used: the reference every converted repo is compared with."""
    vocab_rows = write_fairseq_dictionary(directory / "sentencepiece.bpe.model", directory / "dict.check.txt")
    (directory / "dict.check.txt").unlink()
    return random_fairseq_state_dict(
        vocab_rows,
        config.hidden_size,
        config.num_hidden_layers,
        config.intermediate_size,
        max_positions=config.max_position_embeddings - 2,
        classification_heads=heads,
        seed=seed,
    )


@pytest.fixture(scope="session")
def tiny_sentencepiece(tmp_path_factory) -> Path:
    """A unigram sentencepiece model (~300 pieces) trained once per session on generated multilingual text."""
    return train_tiny_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture
def fairseq_checkpoint(tmp_path, tiny_sentencepiece):
    """`make(name, config=None, **build_options) -> directory` of a fairseq checkpoint under tmp_path."""

    def make(name: str = "fairseq", config: XLMRConfig | None = None, **options) -> Path:
        return build_fairseq_checkpoint(
            tmp_path / name, config or tiny_config(), sentencepiece_model=tiny_sentencepiece, **options
        )

    return make


__all__ = [
    "TINY_SIZES",
    "expected_fairseq_state",
    "fairseq_checkpoint",
    "pack_fairseq_archive",
    "tiny_config",
    "tiny_sentencepiece",
]
