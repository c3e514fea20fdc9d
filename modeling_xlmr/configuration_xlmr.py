"""XLM-R configuration.

`model_type` is transformers' own ``"xlm-roberta"`` and every field keeps the name of
``transformers.XLMRobertaConfig``, so a directory saved from these classes also loads in stock
transformers without ``trust_remote_code`` (and the other way round). Only the defaults differ:
they are xlmr.base's real values, where transformers keeps BERT's.
"""

from __future__ import annotations

import os
import shutil

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# What `trust_remote_code=True` builds from a saved directory. The file names are the ones
# `save_pretrained` copies beside the weights.
AUTO_MAP = {
    "AutoConfig": "configuration_xlmr.XLMRConfig",
    "AutoModel": "modeling_xlmr.XLMRModel",
    "AutoModelForMaskedLM": "modeling_xlmr.XLMRForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_xlmr.XLMRForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_xlmr.XLMRForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_xlmr.XLMRForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_xlmr.XLMRForMultipleChoice",
}

# xlmr.large.v0 differs from the base defaults only in these sizes.
LARGE_SIZES = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


@strict
class XLMRConfig(PreTrainedConfig):
    r"""Configuration of an XLM-R encoder; the defaults are xlmr.base.

    Examples:

    ```python
    >>> base = XLMRConfig()                     # 12 layers, 768 hidden, 12 heads, 3072 FFN
    >>> large = XLMRConfig.large()              # 24 layers, 1024 hidden, 16 heads, 4096 FFN
    >>> tiny = XLMRConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ```

    ``unpad_inputs`` chooses the encoder's packed path: padding is removed once before the first layer
    and restored after the last, so pad positions cost nothing. Real tokens get the same numbers as the
    padded path; pad positions come back as zeros instead of the (meaningless) values a padded forward
    computes for them. ``None`` (the default) packs for inference on padded batches wherever that is
    exact; ``True`` always packs (and raises where it cannot); ``False`` never does.
    """

    model_type = "xlm-roberta"

    vocab_size: int = 250002
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    classifier_dropout: float | int | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    use_cache: bool = False
    unpad_inputs: bool | None = None
    # Whether the bare encoder has transformers' pooler (tanh(dense(<s>))). fairseq checkpoints have none;
    # a repo saved without one sets this False, so loading it builds no random pooler and reports nothing missing.
    add_pooling_layer: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)

    @classmethod
    def large(cls, **overrides) -> "XLMRConfig":
        """xlmr.large: 24 layers, hidden 1024, 16 heads, FFN 4096 (other fields as base)."""
        return cls(**{**LARGE_SIZES, **overrides})

    @property
    def max_sequence_length(self) -> int:
        """Real tokens one sequence may hold, `<s>` and `</s>` included (514 position rows -> 512)."""
        return max_sequence_length(self)

    def validate_architecture(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); choose a head count that divides it."
            )
        if self.type_vocab_size < 1:
            raise ValueError(f"type_vocab_size must be at least 1, got {self.type_vocab_size}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, list) else [value]
            for token_id in ids:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"{name}={token_id} is outside the vocabulary [0, {self.vocab_size}); "
                        "fix the id or the vocab_size."
                    )
        if self.pad_token_id is not None and self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError(
                f"max_position_embeddings ({self.max_position_embeddings}) leaves no position after the padding "
                f"index {self.pad_token_id}: XLM-R positions start at pad_token_id + 1 (use 514 for 512 tokens)."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")


def max_sequence_length(config) -> int:
    """Tokens one sequence may hold for any XLM-R config (this package's or stock transformers'):
    fairseq's positions start after the padding index, so 514 position rows give 512 tokens."""
    return config.max_position_embeddings - (config.pad_token_id or 0) - 1


def remote_code_files() -> list[str]:
    """The code `trust_remote_code=True` runs: every module of this folder but `__init__.py`."""
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(name for name in os.listdir(here) if name.endswith(".py") and name != "__init__.py")


def copy_remote_code(directory: str | os.PathLike) -> list[str]:
    """Copy the remote code beside saved weights or a saved tokenizer: the model, its config and its
    tokenizer travel together, whichever of them was saved. Returns the file names written."""
    here = os.path.dirname(os.path.abspath(__file__))
    names = remote_code_files()
    for name in names:
        target = os.path.join(directory, name)
        if os.path.abspath(target) != os.path.join(here, name):
            shutil.copyfile(os.path.join(here, name), target)
    return names


__all__ = ["XLMRConfig", "AUTO_MAP", "copy_remote_code", "max_sequence_length", "remote_code_files"]
