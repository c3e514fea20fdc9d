"""The batch engine behind `embed` / `classify` and `xlmr extract` / `xlmr classify`.

tokenize (once, the whole input) -> windows -> token-budget batches (`batching`) -> packed forward
(the windows of a batch back to back, never padded) -> pool per window -> one row per text, in input
order. It runs on any XLM-R model: this package's encoder takes the packed windows as they are; a
stock transformers encoder gets them padded, the one input it accepts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..configuration_xlmr import max_sequence_length
from ..modeling_xlmr import XLMRModel
from ..packing import PackedBatch
from . import batching
from .records import is_valid_text

# A sentence head reads one `<s>` state; averaging windows' probabilities is not what it was trained for.
CLASSIFY_LONG_TEXT = ("error", "truncate")


class InferenceEngine:
    """Batched inference for one model and its tokenizer (`model` may carry a head: its encoder is used)."""

    def __init__(self, model: nn.Module, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @property
    def backbone(self) -> nn.Module:
        return self.model.base_model

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the word embeddings (the first one under a device map)."""
        return self.backbone.get_input_embeddings().weight.device

    @property
    def output_device(self) -> torch.device:
        """Where the last layer's states come out (under a device map, possibly not `device`)."""
        return next(self.backbone.encoder.layer[-1].parameters()).device

    @property
    def max_length(self) -> int:
        return max_sequence_length(self.config)

    def embed(
        self,
        texts: Sequence[str],
        pooling: str = "cls",
        normalize: bool = False,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        chunk_overlap: int = batching.DEFAULT_CHUNK_OVERLAP,
        progress: bool = False,
        prompt: str = "",
        max_length: int | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """One float32 vector per text, in input order: (len(texts), hidden) on the CPU.

        `prompt` is put before every text (e5's "query: "). A text over `max_length` tokens (default and at
        most the model's limit) raises (`long_text="error"`), is cut (`"truncate"`) or is encoded as
        overlapping windows whose vectors are averaged, weighted by token count (`"chunk"`); `mean`
        pooling averages all real tokens, `<s>`/`</s>` included (see `batching`). `on_tokens(n)` is called
        after each forward pass with its token count (a caller's own progress display).
        """
        batching.check_choice("pooling", pooling, batching.POOLINGS)
        if prompt:
            texts = [prompt + text for text in _text_list(texts)]
        windows = self.plan(texts, long_text, chunk_overlap, max_length=max_length)
        pooled = torch.empty((len(windows), self.config.hidden_size))
        for indices, states, lengths in self.encode_batches(windows, max_tokens_per_batch, progress, on_tokens):
            pooled[indices] = batching.pool(states, lengths, pooling).cpu()
        embeddings = batching.combine_windows(pooled, windows, len(texts))
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    def classify(
        self,
        texts: Sequence[str],
        head: nn.Module,
        labels: Sequence[str],
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        progress: bool = False,
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[dict]:
        """`{"label", "score", "probabilities": {label: p}}` per text, in input order, from a sentence head
        reading the `<s>` state. `long_text` is "error" or "truncate"."""
        probabilities = self.class_probabilities(
            texts, head, len(labels), max_tokens_per_batch, long_text, progress, on_tokens
        )
        return [classification_record(row, list(labels)) for row in probabilities.tolist()]

    def class_probabilities(
        self,
        texts: Sequence[str],
        head: nn.Module,
        num_labels: int,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        progress: bool = False,
        on_tokens: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """(len(texts), num_labels) float32 softmax of the head over the `<s>` state, in input order."""
        windows = self.plan(texts, long_text, batching.DEFAULT_CHUNK_OVERLAP, policies=CLASSIFY_LONG_TEXT)
        probabilities = torch.empty((len(windows), num_labels))
        with evaluating(head):
            for indices, states, lengths in self.encode_batches(windows, max_tokens_per_batch, progress, on_tokens):
                first_tokens = batching.pool(states, lengths, "cls").to(self.output_device, states.dtype)
                logits = head(first_tokens.unsqueeze(1))  # a head reads position 0 of (batch, seq, hidden)
                probabilities[indices] = logits.float().softmax(dim=-1).cpu()
        return probabilities

    def plan(
        self,
        texts: Sequence[str],
        long_text: str,
        chunk_overlap: int,
        policies: Sequence[str] = batching.LONG_TEXT_POLICIES,
        max_length: int | None = None,
    ) -> list[batching.Window]:
        texts = _text_list(texts)
        content_ids = self.content_ids(texts) if texts else []
        return batching.plan_windows(
            content_ids,
            bos_id=self.tokenizer.bos_token_id,
            eos_id=self.tokenizer.eos_token_id,
            max_length=min(self.max_length, max_length or self.max_length),
            long_text=long_text,
            chunk_overlap=chunk_overlap,
            policies=policies,
        )

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {index} is a {type(text).__name__}, not a str.")
            if not is_valid_text(text):
                raise ValueError(
                    f"text {index} holds a lone surrogate (e.g. '\\ud800'), which is not text; fix it, or pass "
                    "text.encode('utf-8', 'replace').decode() to replace it."
                )
        # As fairseq, text is only text: a literal "<s>" or "<mask>" in it is spelled out in pieces, never
        # turned into the special token (tokenizers that ignore the flag keep their own rule).
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]

    def encode_batches(
        self,
        windows: list[batching.Window],
        max_tokens_per_batch: int,
        progress: bool,
        on_tokens: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[list[int], torch.Tensor, list[int]]]:
        """Yields (window indices, packed last hidden states (tokens, hidden), window lengths) per
        length-sorted batch, in eval mode and inference mode."""
        bar = tqdm(total=sum(map(len, windows)), unit="tok", disable=not progress, dynamic_ncols=True)
        with evaluating(self.model), torch.inference_mode(), bar:
            for indices, batch in batching.iterate_batches(windows, max_tokens_per_batch):
                lengths = [len(window) for window in batch]
                yield indices, self._forward(batch, lengths), lengths
                bar.update(sum(lengths))
                if on_tokens is not None:
                    on_tokens(sum(lengths))

    def _forward(self, batch: list[batching.Window], lengths: list[int]) -> torch.Tensor:
        if isinstance(self.backbone, XLMRModel):
            input_ids = torch.tensor([token for window in batch for token in window.token_ids], device=self.device)
            packed = PackedBatch.from_lengths(lengths, self.device)
            return self.backbone.forward_packed(input_ids, packed).last_hidden_state
        input_ids, attention_mask = batching.collate(batch, self.config.pad_token_id)
        states = self.backbone(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return states.last_hidden_state[attention_mask.to(states.last_hidden_state.device).bool()]


def _text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts (wrap a single text: [text]).")
    return list(texts)


def classification_record(probabilities: list[float], labels: list[str]) -> dict:
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"label": labels[best], "score": probabilities[best], "probabilities": dict(zip(labels, probabilities))}


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """Eval mode inside the block, the previous mode after it (fairseq's `utils.model_eval`)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


__all__ = ["InferenceEngine", "classification_record", "evaluating"]
