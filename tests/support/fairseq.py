"""What a synthetic fairseq checkpoint holds, recomputed independently of how it was written."""

from __future__ import annotations

from pathlib import Path

import torch

from conversion.synthetic import random_fairseq_state_dict, write_fairseq_dictionary
from modeling_xlmr import XLMRConfig


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
