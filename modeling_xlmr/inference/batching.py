"""Batch planning for the inference engine, free of any model code.

The pipeline is split like text-embeddings-inference's: texts are tokenized once (by the engine),
turned into *windows* here (one per text, or several overlapping ones for a long text), grouped
into length-sorted batches under a token budget, run through the encoder (by the engine) with the
windows laid back to back (no padding), pooled per window, and combined back into one row per text
in input order.

Choices, stated once:

* ``mean`` pooling averages every real token of a window, ``<s>`` and ``</s>`` included (the
  attention-mask mean of sentence-transformers); ``cls`` takes the ``<s>`` state.
* ``long_text="chunk"`` cuts the content ids of a long text into windows of at most
  ``max_length - 2`` ids that overlap by ``chunk_overlap`` ids (the last window is aligned to the end
  of the text, so every id is in some window), wraps each in ``<s>``...``</s>`` and combines the
  window vectors as a mean weighted by each window's token count. For ``mean`` pooling that is
  exactly the mean over all windows' tokens (overlapping tokens count once per window).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

POOLINGS = ("cls", "mean")
LONG_TEXT_POLICIES = ("error", "truncate", "chunk")
DEFAULT_MAX_TOKENS_PER_BATCH = 8192
DEFAULT_CHUNK_OVERLAP = 128


class TextTooLongError(ValueError):
    """A text over the model's limit under ``long_text="error"``; `text_index` counts from 0. The message
    offers the `remedies` (other `long_text` policies) the caller accepts."""

    def __init__(
        self, text_index: int, num_tokens: int, max_length: int, remedies: Sequence[str] = ("truncate", "chunk")
    ):
        self.text_index, self.num_tokens, self.max_length, self.remedies = (
            text_index,
            num_tokens,
            max_length,
            tuple(remedies),
        )
        offers = []
        if "truncate" in remedies:
            offers.append(f"long_text='truncate' (CLI: --long-text truncate) to keep its first {max_length - 2} tokens")
        if "chunk" in remedies:
            offers.append("long_text='chunk' (CLI: --long-text chunk) to pool overlapping windows over the whole text")
        super().__init__(
            f"text {text_index} has {num_tokens} tokens (with <s> and </s>), more than the {max_length} XLM-R "
            f"accepts; pass {', or '.join(offers)}."
        )

    def shifted(self, offset: int) -> TextTooLongError:
        """The same error for a text numbered `offset` further (its index in a larger input)."""
        return TextTooLongError(self.text_index + offset, self.num_tokens, self.max_length, self.remedies)


@dataclass(frozen=True)
class Window:
    """One encoder input: `token_ids` includes `<s>` and `</s>`; it belongs to text `text_index`."""

    text_index: int
    token_ids: list[int]

    def __len__(self) -> int:
        return len(self.token_ids)


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}.")


def plan_windows(
    content_ids: Sequence[Sequence[int]],
    *,
    bos_id: int,
    eos_id: int,
    max_length: int,
    long_text: str = "error",
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    policies: Sequence[str] = LONG_TEXT_POLICIES,
) -> list[Window]:
    """Turns each text's content ids (no special tokens) into the windows the encoder will see.

    `max_length` counts `<s>` and `</s>`. A text that does not fit raises (``"error"``), keeps its
    first ids (``"truncate"``) or is split into overlapping windows (``"chunk"``); `policies` are those
    the caller offers (its error names only those).
    """
    check_choice("long_text", long_text, policies)
    room = max_length - 2
    if room < 1:
        raise ValueError(f"max_length={max_length} leaves no room for content between <s> and </s>.")
    if long_text == "chunk" and not 0 <= chunk_overlap < room:
        raise ValueError(f"chunk_overlap={chunk_overlap} must be in [0, {room}) so that windows advance.")

    windows = []
    for text_index, ids in enumerate(content_ids):
        ids = list(ids)
        if len(ids) <= room:
            pieces = [ids]
        elif long_text == "error":
            raise TextTooLongError(text_index, len(ids) + 2, max_length, [p for p in policies if p != "error"])
        elif long_text == "truncate":
            pieces = [ids[:room]]
        else:
            pieces = [ids[start : start + room] for start in window_starts(len(ids), room, chunk_overlap)]
        windows.extend(Window(text_index, [bos_id, *piece, eos_id]) for piece in pieces)
    return windows


def window_starts(length: int, size: int, overlap: int) -> list[int]:
    """Starts of windows of `size` over `length` ids, `overlap` ids shared by neighbours, the last
    one ending exactly at `length`."""
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def token_budget_batches(lengths: Sequence[int], max_tokens_per_batch: int) -> list[list[int]]:
    """Groups indices into batches, longest first, whose padded size (count x longest) stays within
    the budget; a single input longer than the budget gets a batch of its own."""
    if max_tokens_per_batch < 1:
        raise ValueError(f"max_tokens_per_batch must be positive, got {max_tokens_per_batch}.")
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    batches: list[list[int]] = []
    for index in order:
        # Sorted longest first, so the batch's first member sets its padded length.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens_per_batch:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def collate(windows: Sequence[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask): only for an encoder that cannot take packed windows
    (a stock transformers model); this package's encoder never sees padding here."""
    longest = max(len(window) for window in windows)
    input_ids = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), longest), dtype=torch.long)
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = torch.tensor(window.token_ids, dtype=torch.long)
        attention_mask[row, : len(window)] = 1
    return input_ids, attention_mask


def pool(states: torch.Tensor, lengths: Sequence[int], pooling: str) -> torch.Tensor:
    """Packed (tokens, hidden) states of sequences of `lengths`, back to back -> (sequences, hidden),
    in float32 whatever the model's dtype."""
    check_choice("pooling", pooling, POOLINGS)
    states = states.float()
    counts = torch.tensor(lengths, dtype=torch.long, device=states.device)
    if pooling == "cls":
        return states.index_select(0, counts.cumsum(0) - counts)
    sequence_of_token = torch.repeat_interleave(torch.arange(len(lengths), device=states.device), counts)
    sums = states.new_zeros((len(lengths), states.shape[-1])).index_add_(0, sequence_of_token, states)
    return sums / counts[:, None]


def combine_windows(pooled: torch.Tensor, windows: Sequence[Window], num_texts: int) -> torch.Tensor:
    """Per-window vectors (in `windows` order) -> one vector per text: the token-count-weighted mean
    of that text's windows (a text with one window gets that window's vector unchanged)."""
    text_index = torch.tensor([window.text_index for window in windows], dtype=torch.long, device=pooled.device)
    weights = torch.tensor([float(len(window)) for window in windows], device=pooled.device)
    if bool((torch.bincount(text_index, minlength=num_texts) == 1).all()):
        return pooled.new_zeros((num_texts, pooled.shape[-1])).index_copy_(0, text_index, pooled)
    sums = pooled.new_zeros((num_texts, pooled.shape[-1])).index_add_(0, text_index, pooled * weights[:, None])
    totals = weights.new_zeros(num_texts).index_add_(0, text_index, weights)
    return sums / totals[:, None]


def iterate_batches(windows: Sequence[Window], max_tokens_per_batch: int) -> Iterator[tuple[list[int], list[Window]]]:
    """Yields (window indices, windows) per batch, longest batches first."""
    for indices in token_budget_batches([len(window) for window in windows], max_tokens_per_batch):
        yield indices, [windows[index] for index in indices]


__all__ = [
    "POOLINGS",
    "LONG_TEXT_POLICIES",
    "DEFAULT_MAX_TOKENS_PER_BATCH",
    "DEFAULT_CHUNK_OVERLAP",
    "TextTooLongError",
    "Window",
    "plan_windows",
    "window_starts",
    "token_budget_batches",
    "collate",
    "pool",
    "combine_windows",
    "iterate_batches",
]
