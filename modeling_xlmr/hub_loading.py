"""Loading for `XLMRHubInterface`: dtype names, which model class a repo needs, extra fairseq heads."""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoTokenizer
from transformers.activations import ACT2FN
from transformers.utils import cached_file

from conversion.heads import HEADS_FILE as CLASSIFICATION_HEADS_FILE  # the converter owns the format
from conversion.heads import read_heads_file

from .configuration_xlmr import XLMRConfig
from .modeling_xlmr import XLMRClassificationHead, XLMRForMaskedLM, XLMRForSequenceClassification, XLMRModel

# The converter writes the fairseq heads it did not make `classifier` into this file, keyed
# `NAME.dense.weight`, `NAME.out_proj.bias`..., and describes them in
# `config.fairseq_classification_heads = {NAME: {"num_classes": n, "labels": [...] | None}}`.

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32'/'float32', 'fp16'/'float16'/'half', 'bf16'/'bfloat16', a torch dtype, or None (as saved)."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or a torch float dtype).")


def check_model_location(name_or_path: str) -> None:
    """Fail fast and clearly on a missing local model, instead of a Hub lookup for a path."""
    path = os.path.expanduser(str(name_or_path))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise OSError(
                f"model directory {name_or_path} has no config.json; point to a Transformers repo "
                "(convert fairseq checkpoints first with `xlmr convert`)."
            )
        return
    if os.path.exists(path):
        raise OSError(f"{name_or_path} is a file; pass the directory that holds config.json and the weights.")
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1:
        raise OSError(f"{name_or_path} not found: no such directory, and not a Hub id of the form 'owner/name'.")


class XLMRForMaskedLMWithClassifier(XLMRForMaskedLM):
    """Encoder + LM head + `classifier`: a converted repo whose fairseq checkpoint had a head holds
    all three (architectures `[...ForMaskedLM, ...ForSequenceClassification]`)."""

    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.classifier = XLMRClassificationHead(config)
        self.post_init()


def model_class_for(config: XLMRConfig) -> type[nn.Module]:
    """The class whose weights the repo holds, by its `architectures` (stock or converted names)."""
    architectures = config.architectures or []
    masked_lm = not architectures or any(name.endswith("ForMaskedLM") for name in architectures)
    classifier = any(name.endswith("ForSequenceClassification") for name in architectures)
    if masked_lm and classifier:
        return XLMRForMaskedLMWithClassifier
    if classifier:
        return XLMRForSequenceClassification
    if masked_lm:
        return XLMRForMaskedLM
    return XLMRModel


def load_model_and_tokenizer(
    name_or_path: str,
    device_map: str | dict | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    **model_kwargs,
):
    """This package's classes on any XLM-R repo (same weight names as transformers'), so stock repos
    get the packed inference path too; the tokenizer is the repo's own."""
    check_model_location(name_or_path)
    config = XLMRConfig.from_pretrained(name_or_path, revision=revision)
    if config.model_type != "xlm-roberta":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} model, not XLM-R (model_type 'xlm-roberta').")
    model_class = model_class_for(config)
    if model_class is XLMRModel:
        model_kwargs.setdefault("add_pooling_layer", False)
    model = model_class.from_pretrained(
        name_or_path, config=config, revision=revision, device_map=device_map, dtype=dtype, **model_kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=True)
    return model, tokenizer


class FairseqClassificationHead(nn.Module):
    """fairseq's `RobertaClassificationHead`: dropout -> dense -> activation -> dropout -> out_proj on `<s>`."""

    def __init__(
        self,
        input_dim: int,
        inner_dim: int,
        num_classes: int,
        activation_fn: str = "tanh",
        pooler_dropout: float = 0.0,
    ):
        super().__init__()
        if activation_fn not in ACT2FN:
            raise ValueError(f"unknown activation_fn {activation_fn!r}; use one of {', '.join(sorted(ACT2FN))}.")
        self.dense = nn.Linear(input_dim, inner_dim)
        self.activation_fn = ACT2FN[activation_fn]
        self.dropout = nn.Dropout(pooler_dropout)
        self.out_proj = nn.Linear(inner_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0, :])
        x = self.activation_fn(self.dense(x))
        return self.out_proj(self.dropout(x))


def load_classification_heads(
    name_or_path: str, config: XLMRConfig, revision: str | None = None, skip: tuple[str, ...] = ()
) -> dict[str, tuple[FairseqClassificationHead, list[str] | None]]:
    """The fairseq heads a converted repo carries beside its weights (`conversion/heads.py` describes
    the format), except the names in `skip`: {name: (head, labels)}."""
    described = getattr(config, "fairseq_classification_heads", None) or {}
    described = {name: value for name, value in described.items() if name not in skip}
    if not described:
        return {}
    path = cached_file(
        name_or_path, CLASSIFICATION_HEADS_FILE, revision=revision, _raise_exceptions_for_missing_entries=False
    )
    if path is None:
        raise OSError(
            f"{name_or_path}: config.fairseq_classification_heads lists {sorted(described)} but "
            f"{CLASSIFICATION_HEADS_FILE} is missing; re-run `xlmr convert`."
        )
    states = read_heads_file(path, list(described))
    heads = {}
    for name, description in described.items():
        state = states[name]
        inner_dim, input_dim = state["dense.weight"].shape
        head = FairseqClassificationHead(input_dim, inner_dim, state["out_proj.weight"].shape[0])
        head.load_state_dict(state)
        heads[name] = (head, (description or {}).get("labels"))
    return heads


__all__ = [
    "CLASSIFICATION_HEADS_FILE",
    "DTYPES",
    "parse_dtype",
    "check_model_location",
    "XLMRForMaskedLMWithClassifier",
    "model_class_for",
    "load_model_and_tokenizer",
    "FairseqClassificationHead",
    "load_classification_heads",
]
