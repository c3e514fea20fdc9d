"""fairseq's named classification heads beside a repo's weights: the file format, and reading it back.

A fairseq RoBERTa keeps any number of named sentence heads (`classification_heads.NAME.*`); a
transformers repo has one `classifier`. A converted repo stores them like this:

- `classification_heads.safetensors` holds every head of the checkpoint as
  `NAME.{dense,out_proj}.{weight,bias}` (a separate file, so stock transformers never sees
  unexpected keys), which is what the fairseq-style interface's `predict(NAME, tokens)` reads;
- the head chosen with `xlmr convert --head` is also `classifier.{dense,out_proj}.{weight,bias}` in
  `model.safetensors` (what `AutoModelForSequenceClassification` loads);
- `config.json` describes them: `fairseq_classification_heads = {NAME: {"num_classes": n,
  "labels": [...] or null}}` and `fairseq_head_name` = the head stored as `classifier` (or null).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..modeling_xlmr import XLMRClassificationHead

HEADS_FILE = "classification_heads.safetensors"
HEAD_TENSORS = ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias")


def write_heads_file(path: str | Path, heads: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """{name: {"dense.weight": ..., ...}} -> one safetensors file keyed `NAME.dense.weight`, ..."""
    tensors = {f"{name}.{key}": state[key].contiguous() for name, state in heads.items() for key in HEAD_TENSORS}
    save_file(tensors, str(path), metadata={"format": "pt"})


def read_heads_file(path: str | Path, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The named heads stored in a heads file: name -> state dict with fairseq's head keys."""
    tensors = load_file(str(path))
    heads = {}
    for name in names:
        heads[name] = {key: tensors[f"{name}.{key}"] for key in HEAD_TENSORS if f"{name}.{key}" in tensors}
        if len(heads[name]) != len(HEAD_TENSORS):
            raise OSError(f"{path} lacks some of head {name!r}'s tensors {list(HEAD_TENSORS)}; re-run `xlmr convert`.")
    return heads


def described_heads(config) -> dict[str, dict]:
    """What config.json says of the fairseq heads: {name: {"num_classes": n, "labels": [...] | None}}."""
    return {
        name: description or {}
        for name, description in (getattr(config, "fairseq_classification_heads", None) or {}).items()
    }


def head_from_state(config, state: Mapping[str, torch.Tensor]) -> XLMRClassificationHead:
    """A head module holding `state` (sizes read from the tensors; dropout off, as for inference)."""
    inner_dim = state["dense.weight"].shape[0]
    head = XLMRClassificationHead(
        config, num_labels=state["out_proj.weight"].shape[0], inner_dim=inner_dim, dropout=0.0
    )
    head.load_state_dict(dict(state))
    return head


def load_classification_heads(
    heads_file: str | Path | None, config, skip: tuple[str, ...] = ()
) -> dict[str, tuple[XLMRClassificationHead, list[str] | None]]:
    """The fairseq heads `config` lists, except those in `skip`, read from `heads_file`: {name: (head, labels)}."""
    described = {name: value for name, value in described_heads(config).items() if name not in skip}
    if not described:
        return {}
    if heads_file is None:
        raise OSError(
            f"config.fairseq_classification_heads lists {sorted(described)} but {HEADS_FILE} is missing; "
            "re-run `xlmr convert`."
        )
    states = read_heads_file(heads_file, list(described))
    return {name: (head_from_state(config, states[name]), described[name].get("labels")) for name in described}


def label_names(head: nn.Module, labels: list[str] | None) -> list[str]:
    """The head's class names, or LABEL_i when none (or not one per class) are known."""
    num_classes = head.out_proj.out_features
    if labels is None or len(labels) != num_classes:
        return [f"LABEL_{index}" for index in range(num_classes)]
    return list(labels)


def default_head(heads: Mapping[str, nn.Module], classifier: nn.Module | None) -> str:
    """The head `classify` uses when none is named: the model's own classifier, else the only head."""
    for name, head in heads.items():
        if head is classifier:
            return name
    if len(heads) == 1:
        return next(iter(heads))
    known = ", ".join(map(repr, heads)) or "none"
    raise ValueError(
        f"no default classification head (heads: {known}); load a sequence-classification repo or pass head=NAME."
    )


__all__ = [
    "HEADS_FILE",
    "HEAD_TENSORS",
    "default_head",
    "described_heads",
    "head_from_state",
    "label_names",
    "load_classification_heads",
    "read_heads_file",
    "write_heads_file",
]
