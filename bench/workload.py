"""The benchmark workload: seeded random sentences shaped like real text, and batching helpers.

Lengths are lognormal (median ~32 tokens incl. <s> and </s>, long right tail, capped at 512), token ids are random
pieces from the real vocabulary range framed by `<s>` ... `</s>`; batches are padded to their
longest sentence, as a tokenizer with padding=True would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOS, PAD, EOS = 0, 1, 2
FIRST_PIECE = 5  # ids 3, 4 are <unk> and the first ordinary piece in XLM-R's dictionary; skip the specials


@dataclass
class Workload:
    sentences: list[torch.Tensor]  # each (length,) int64, <s> ... </s>

    @property
    def real_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)


def make_workload(
    num_sentences: int = 192,
    median_length: int = 32,
    sigma: float = 0.45,
    max_length: int = 512,
    vocab_size: int = 250002,
    seed: int = 0,
) -> Workload:
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(num_sentences, generator=generator)
    lengths = (math.log(median_length) + sigma * normal).exp().round().clamp(3, max_length).long()
    sentences = []
    for length in lengths.tolist():
        body = torch.randint(FIRST_PIECE, vocab_size, (length - 2,), generator=generator)
        sentences.append(torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])]))
    return Workload(sentences)


def pad_batch(sentences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads to the longest sentence: (input_ids, attention_mask)."""
    longest = max(len(s) for s in sentences)
    input_ids = torch.full((len(sentences), longest), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(sentences), longest), dtype=torch.long)
    for row, sentence in enumerate(sentences):
        input_ids[row, : len(sentence)] = sentence
        attention_mask[row, : len(sentence)] = 1
    return input_ids, attention_mask


def batches_in_order(workload: Workload, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sentences = workload.sentences
    return [pad_batch(sentences[i : i + batch_size]) for i in range(0, len(sentences), batch_size)]


def batches_sorted(workload: Workload, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Length-sorted batches (the usual trick against padding); outputs are matched back by index."""
    order = sorted(range(len(workload.sentences)), key=lambda i: len(workload.sentences[i]))
    sentences = [workload.sentences[i] for i in order]
    return [pad_batch(sentences[i : i + batch_size]) for i in range(0, len(sentences), batch_size)]


def padding_fraction(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    total = sum(mask.numel() for _, mask in batches)
    real = sum(int(mask.sum()) for _, mask in batches)
    return 1.0 - real / total


def batches_by_token_budget(workload: Workload, max_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Input order, each batch holding as many sentences as fit in `max_tokens` real tokens (the packed
    path's natural batching: its cost follows real tokens, not batch size times the longest sentence)."""
    batches, current, current_tokens = [], [], 0
    for sentence in workload.sentences:
        if current and current_tokens + len(sentence) > max_tokens:
            batches.append(pad_batch(current))
            current, current_tokens = [], 0
        current.append(sentence)
        current_tokens += len(sentence)
    if current:
        batches.append(pad_batch(current))
    return batches
