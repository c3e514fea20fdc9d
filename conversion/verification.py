"""Check a freshly written repo against the fairseq weights it came from.

The repo is reloaded the way users load it (transformers' Auto classes, `trust_remote_code=True`)
and run on a small multilingual batch with padding; the reference is `reference_forward`, which
reads the fairseq state dict directly. Weights are compared after rounding the fairseq tensors to
the saved dtype, so fp16/bf16 repos are checked for a faithful mapping, not for rounding error.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_xlmr.hub.heads import HEADS_FILE, described_heads, read_heads_file

from .checkpoint import PADDING_IDX, FairseqCheckpoint
from .reference import reference_forward

VERIFICATION_SENTENCES = (
    "Hello world! cécé herlolip",
    "XLM-R est un modèle multilingue.",
    "Привет, мир! Как дела?",
    "你好，世界。",
    "नमस्ते दुनिया",
)


@dataclass
class VerificationReport:
    """Max abs difference per output. A NaN or infinite output (on either side) is a difference of inf:
    it can never pass, and `worst` names it."""

    differences: dict[str, float] = field(default_factory=dict)

    @property
    def max_abs_difference(self) -> float:
        return max(self.differences.values(), default=0.0)  # values are never NaN (see max_abs_difference)

    @property
    def worst(self) -> str:
        return max(self.differences, key=self.differences.get) if self.differences else "-"

    def summary(self) -> str:
        parts = ", ".join(f"{name} {value:.2e}" for name, value in self.differences.items())
        return f"max abs difference vs the fairseq weights: {self.max_abs_difference:.2e} ({parts})"


def max_abs_difference(actual: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Max |actual - expected| (over real tokens when `mask` is given: pad positions carry no meaning in
    either model); inf when either side holds a NaN or an infinity, which Python's max() would skip."""
    if mask is not None:
        actual, expected = actual[mask.bool()], expected[mask.bool()]
    if not (torch.isfinite(actual).all() and torch.isfinite(expected).all()):
        return float("inf")
    return float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0


def _check_loading(info: dict, allowed_unexpected: str, what: str) -> None:
    missing = list(info.get("missing_keys", []))
    unexpected = [key for key in info.get("unexpected_keys", []) if not key.startswith(allowed_unexpected)]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"verification failed: loading the repo as {what} reported missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, mismatched {mismatched[:3]}."
        )


def _head_logits(head: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    pooled = torch.tanh(
        torch.nn.functional.linear(features[:, 0], head["dense.weight"].float(), head["dense.bias"].float())
    )
    return torch.nn.functional.linear(pooled, head["out_proj.weight"].float(), head["out_proj.bias"].float())


def _saved_heads(repo: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The heads the written repo keeps in its heads file, as fairseq state dicts."""
    from modeling_xlmr.configuration_xlmr import XLMRConfig

    names = list(described_heads(XLMRConfig.from_pretrained(repo)))
    return read_heads_file(repo / HEADS_FILE, names) if names else {}


@contextmanager
def _quiet_transformers():
    """Hide transformers' load reports and progress bars: `_check_loading` inspects the same information."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    progress_bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if progress_bars:
            logging.enable_progress_bar()


@torch.no_grad()
def verify_conversion(
    repo: Path, checkpoint: FairseqCheckpoint, head: str | None, dtype: torch.dtype
) -> VerificationReport:
    """Max abs differences between the reloaded repo and the fairseq reference, per output."""
    with _quiet_transformers():
        return _verify(repo, checkpoint, head, dtype)


def _verify(repo: Path, checkpoint: FairseqCheckpoint, head: str | None, dtype: torch.dtype) -> VerificationReport:
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(repo), trust_remote_code=True)
    batch = tokenizer(list(VERIFICATION_SENTENCES), padding=True, return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    rounded = {key: tensor.to(dtype).float() for key, tensor in checkpoint.state_dict.items()}
    heads = tuple(checkpoint.classification_heads)
    expected = reference_forward(
        rounded, input_ids, checkpoint.hyper_parameters.num_heads, padding_idx=PADDING_IDX, heads=heads
    )
    del rounded

    report = VerificationReport()
    model, info = AutoModelForMaskedLM.from_pretrained(
        str(repo), trust_remote_code=True, dtype=torch.float32, output_loading_info=True
    )
    _check_loading(info, "classifier.", "a masked LM")
    outputs = model.eval()(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    token_mask = attention_mask
    report.differences["hidden states"] = max(
        max_abs_difference(actual, reference, token_mask)
        for actual, reference in zip(outputs.hidden_states, expected.hidden_states, strict=True)
    )
    report.differences["LM logits"] = max_abs_difference(outputs.logits, expected.lm_logits, token_mask)
    features = outputs.hidden_states[-1]
    del model, outputs

    if head is not None:
        classifier, info = AutoModelForSequenceClassification.from_pretrained(
            str(repo), trust_remote_code=True, dtype=torch.float32, output_loading_info=True
        )
        _check_loading(info, "lm_head.", "a sequence classifier")
        logits = classifier.eval()(input_ids=input_ids, attention_mask=attention_mask).logits
        report.differences[f"head {head}"] = max_abs_difference(logits, expected.head_logits[head])
        del classifier
    for name, tensors in _saved_heads(repo).items():
        logits = _head_logits(tensors, features)
        report.differences[f"heads file: {name}"] = max_abs_difference(logits, expected.head_logits[name])
    return report


__all__ = ["VERIFICATION_SENTENCES", "VerificationReport", "max_abs_difference", "verify_conversion"]
