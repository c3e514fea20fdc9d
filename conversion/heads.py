"""fairseq classification heads in a converted repo.

A fairseq RoBERTa keeps any number of named sentence heads (`classification_heads.NAME.*`); a
transformers repo has one `classifier`. A converted repo stores them like this:

- `classification_heads.safetensors` holds every head of the checkpoint as
  `NAME.{dense,out_proj}.{weight,bias}` (a separate file, so stock transformers never sees
  unexpected keys), which is what the fairseq-style interface's `predict(NAME, tokens)` reads;
- the head chosen with `--head` is also `classifier.{dense,out_proj}.{weight,bias}` in
  `model.safetensors` (what `AutoModelForSequenceClassification` loads);
- `config.json` describes them: `fairseq_classification_heads = {NAME: {"num_classes": n,
  "labels": [...] or null}}` and `fairseq_head_name` = the head stored as `classifier` (or null).

`load_classification_heads(repo)` reads them back: name -> state dict with the keys of fairseq's
`RobertaClassificationHead` (`dense.weight`, `dense.bias`, `out_proj.weight`, `out_proj.bias`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

HEADS_FILE = "classification_heads.safetensors"
HEAD_TENSORS = ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias")


def read_heads_file(path: str | Path, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The named heads stored in a `classification_heads.safetensors` file: name -> head state dict."""
    tensors = load_file(str(path))
    heads = {}
    for name in names:
        heads[name] = {key: tensors[f"{name}.{key}"] for key in HEAD_TENSORS if f"{name}.{key}" in tensors}
        if len(heads[name]) != len(HEAD_TENSORS):
            raise OSError(f"{path} lacks some of head {name!r}'s tensors {list(HEAD_TENSORS)}; re-run `xlmr convert`.")
    return heads


def load_classification_heads(repo: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every fairseq classification head of a converted repo directory: name -> head state dict."""
    repo = Path(repo)
    config = json.loads((repo / "config.json").read_text(encoding="utf-8"))
    names = list(config.get("fairseq_classification_heads") or {})
    if not names:
        return {}
    if not (repo / HEADS_FILE).is_file():
        raise OSError(f"{repo} lists classification heads {names} in config.json but has no {HEADS_FILE}.")
    return read_heads_file(repo / HEADS_FILE, names)


__all__ = ["HEADS_FILE", "HEAD_TENSORS", "load_classification_heads", "read_heads_file"]
