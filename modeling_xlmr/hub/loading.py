"""Loading an XLM-R repo (local directory or Hub id) with this package's classes: the model whose weights
the repo holds, its tokenizer, and the fairseq heads saved beside it.

No code from the repo runs unless the caller passes `trust_remote_code=True`: models always load into the
installed classes, a tokenizer of this package's format loads with the installed `XLMRTokenizerFast`
(whatever .py files sit beside it), and a repo whose tokenizer needs its own code is refused, naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoTokenizer
from transformers.utils import cached_file

from ..common.dtypes import load_dtype
from ..configuration_xlmr import XLMRConfig
from ..modeling_xlmr import (
    XLMRClassificationHead,
    XLMRForMaskedLM,
    XLMRForSequenceClassification,
    XLMRModel,
)
from ..tokenization_xlmr import XLMRTokenizerFast
from .heads import HEADS_FILE, load_classification_heads
from .sentence_settings import SentenceSettings, read_sentence_settings

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class RemoteCodeError(ValueError):
    """The repo needs code of its own to load, and the caller did not allow it to run."""


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


def _remote_references(tokenizer_config: dict) -> list[str]:
    auto_map = (tokenizer_config.get("auto_map") or {}).get("AutoTokenizer")
    references = auto_map if isinstance(auto_map, (list, tuple)) else [auto_map]
    return [reference for reference in references if reference]


def _is_own_format(tokenizer_config: dict) -> bool:
    own = f"{XLMRTokenizerFast.__module__.rpartition('.')[2]}.{XLMRTokenizerFast.__name__}"
    return tokenizer_config.get("tokenizer_class") == XLMRTokenizerFast.__name__ or any(
        reference.split("--")[-1] == own for reference in _remote_references(tokenizer_config)
    )


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The repo's tokenizer, running none of the repo's code unless `trust_remote_code`."""
    path = cached_file(
        name_or_path, TOKENIZER_CONFIG_FILE, revision=revision, _raise_exceptions_for_missing_entries=False
    )
    tokenizer_config = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            tokenizer_config = json.load(handle)
    if _is_own_format(tokenizer_config):
        return XLMRTokenizerFast.from_pretrained(name_or_path, revision=revision)
    remote = _remote_references(tokenizer_config)
    if remote and not trust_remote_code:
        module = remote[-1].split("--")[-1].rpartition(".")[0]
        raise RemoteCodeError(
            f"{name_or_path}'s tokenizer is custom code ({module}.py, class {remote[-1]}), which would run on this "
            "machine; pass --trust-remote-code (trust_remote_code=True) only if you trust that repo."
        )
    return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)


@dataclass
class LoadedRepo:
    """A repo's model, tokenizer, named classification heads ({name: (head, labels or None)}) and how it
    makes sentence embeddings (its sentence-transformers settings; else `<s>`, not normalized)."""

    model: nn.Module
    tokenizer: object
    heads: dict[str, tuple[nn.Module, list[str] | None]] = field(default_factory=dict)
    sentence_settings: SentenceSettings = field(default_factory=SentenceSettings)


def config_labels(config) -> list[str]:
    id2label = config.id2label or {}
    return [str(id2label.get(index, f"LABEL_{index}")) for index in range(config.num_labels)]


def load_repo(
    name_or_path: str,
    device_map: str | dict | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    **model_kwargs,
) -> LoadedRepo:
    """This package's classes on any XLM-R repo (same weight names as transformers'), so stock repos get
    the packed inference path too; the tokenizer is the repo's own (`load_tokenizer`). The model's
    `classifier` is a head under its fairseq name (or "classifier"); the other fairseq heads come from the
    heads file. `dtype=torch.int8` loads fp32 weights and turns on int8 inference (`quantize_for_inference`)."""
    check_model_location(name_or_path)
    config = XLMRConfig.from_pretrained(name_or_path, revision=revision)
    if config.model_type != "xlm-roberta":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} model, not XLM-R (model_type 'xlm-roberta').")
    model_class = model_class_for(config)
    model = model_class.from_pretrained(
        name_or_path, config=config, revision=revision, device_map=device_map, dtype=load_dtype(dtype), **model_kwargs
    )
    if dtype == torch.int8:  # fp32 weights as loaded, quantised into the fast path's cache on first use
        model.quantize_for_inference()
    tokenizer = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)

    heads: dict[str, tuple[nn.Module, list[str] | None]] = {}
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module):
        heads[getattr(config, "fairseq_head_name", None) or "classifier"] = (classifier, config_labels(config))
    heads_file = cached_file(name_or_path, HEADS_FILE, revision=revision, _raise_exceptions_for_missing_entries=False)
    output_device = next(model.base_model.encoder.layer[-1].parameters()).device
    for name, (head, labels) in load_classification_heads(heads_file, config, skip=tuple(heads)).items():
        heads[name] = (head.to(output_device, model.dtype), labels)
    settings = read_sentence_settings(name_or_path, revision) or SentenceSettings()
    return LoadedRepo(model=model, tokenizer=tokenizer, heads=heads, sentence_settings=settings)


__all__ = [
    "LoadedRepo",
    "RemoteCodeError",
    "XLMRForMaskedLMWithClassifier",
    "check_model_location",
    "load_repo",
    "load_tokenizer",
    "model_class_for",
]
