"""Loading an XLM-R repo (local directory or Hub id) with this package's classes: the model whose weights
the repo holds, its tokenizer, and the fairseq heads saved beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoTokenizer
from transformers.utils import cached_file

from ..configuration_xlmr import XLMRConfig
from ..modeling_xlmr import (
    XLMRClassificationHead,
    XLMRForMaskedLM,
    XLMRForSequenceClassification,
    XLMRModel,
)
from .heads import HEADS_FILE, load_classification_heads


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


@dataclass
class LoadedRepo:
    """A repo's model, tokenizer and named classification heads ({name: (head, labels or None)})."""

    model: nn.Module
    tokenizer: object
    heads: dict[str, tuple[nn.Module, list[str] | None]] = field(default_factory=dict)


def config_labels(config) -> list[str]:
    id2label = config.id2label or {}
    return [str(id2label.get(index, f"LABEL_{index}")) for index in range(config.num_labels)]


def load_repo(
    name_or_path: str,
    device_map: str | dict | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    **model_kwargs,
) -> LoadedRepo:
    """This package's classes on any XLM-R repo (same weight names as transformers'), so stock repos get
    the packed inference path too; the tokenizer is the repo's own. The model's `classifier` is a head
    under its fairseq name (or "classifier"); the other fairseq heads come from the heads file."""
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

    heads: dict[str, tuple[nn.Module, list[str] | None]] = {}
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module):
        heads[getattr(config, "fairseq_head_name", None) or "classifier"] = (classifier, config_labels(config))
    heads_file = cached_file(name_or_path, HEADS_FILE, revision=revision, _raise_exceptions_for_missing_entries=False)
    output_device = next(model.base_model.encoder.layer[-1].parameters()).device
    for name, (head, labels) in load_classification_heads(heads_file, config, skip=tuple(heads)).items():
        heads[name] = (head.to(output_device, model.dtype), labels)
    return LoadedRepo(model=model, tokenizer=tokenizer, heads=heads)


__all__ = ["LoadedRepo", "XLMRForMaskedLMWithClassifier", "check_model_location", "load_repo", "model_class_for"]
