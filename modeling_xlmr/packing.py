"""Packed (unpadded) batches for the encoder's fast path.

A padded batch (batch, seq, hidden) is turned once into the real tokens only (tokens, hidden);
every projection, LayerNorm and feed-forward then runs on real tokens. Attention is the only step
that needs sequence boundaries: it regroups each sequence's tokens, attends without padded keys,
and packs the result again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F


def is_tracing() -> bool:
    """A trace, an export or a compile is running: shapes and values are symbolic, so no decision may read
    the data (packing depends on the mask's values) and no Python int may be taken from a tensor."""
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.onnx.is_in_onnx_export()
    )


@dataclass
class PackedBatch:
    """Where each real token of a padded batch lives, in the padded layout and in attention's layout."""

    token_indices: torch.Tensor  # (tokens,) flat index into the padded (batch * seq) layout
    attention_indices: torch.Tensor  # (tokens,) flat index into a left-aligned (batch * longest) layout
    position_in_sequence: torch.Tensor  # (tokens,) 0 for each sequence's first real token, then 1, 2, ...
    key_mask: torch.Tensor | None  # (batch, 1, 1, longest) True where a key is real; None when nothing is padded
    cu_seqlens: torch.Tensor  # (batch + 1,) int32 cumulative lengths, for varlen kernels
    max_seqlen: int
    batch_size: int
    seq_len: int
    lengths: tuple[int, ...] = ()  # real tokens per sequence, in packed order
    # Built on first use by `_attention_groups`, then shared by every layer of the forward.
    attention_groups: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> PackedBatch:
        mask = attention_mask.bool()
        batch_size, seq_len = mask.shape
        if bool(mask.all()):  # nothing padded (a single text, equal lengths): the layout is known, no search
            return cls._unpadded(batch_size, seq_len, mask.device)
        lengths = mask.sum(dim=1)
        longest = int(lengths.max()) if batch_size else 0
        token_indices = mask.flatten().nonzero().squeeze(-1)
        # Rank of each real token inside its own sequence, whatever the padding side.
        rank_in_sequence = (mask.cumsum(dim=1) - 1).flatten()[token_indices]
        sequence_of_token = token_indices // seq_len
        attention_indices = sequence_of_token * longest + rank_in_sequence
        key_mask = torch.arange(longest, device=mask.device)[None, :] < lengths[:, None]
        if bool(key_mask.all()):
            key_mask = None  # equal lengths: attention needs no mask (and SDPA then takes its fastest kernel)
        else:
            key_mask = key_mask[:, None, None, :]
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return cls(
            token_indices=token_indices,
            attention_indices=attention_indices,
            position_in_sequence=rank_in_sequence,
            key_mask=key_mask,
            cu_seqlens=cu_seqlens,
            max_seqlen=longest,
            batch_size=batch_size,
            seq_len=seq_len,
            lengths=tuple(lengths.tolist()),
        )

    @classmethod
    def _unpadded(cls, batch_size: int, seq_len: int, device: torch.device) -> PackedBatch:
        token_indices = torch.arange(batch_size * seq_len, device=device)
        return cls(
            token_indices=token_indices,
            attention_indices=token_indices,
            position_in_sequence=torch.arange(seq_len, device=device).expand(batch_size, seq_len).reshape(-1),
            key_mask=None,
            cu_seqlens=torch.arange(0, (batch_size + 1) * seq_len, max(seq_len, 1), dtype=torch.int32, device=device),
            max_seqlen=seq_len if batch_size else 0,
            batch_size=batch_size,
            seq_len=seq_len,
            lengths=(seq_len,) * batch_size,
        )

    @classmethod
    def from_lengths(cls, lengths: list[int] | tuple[int, ...], device: torch.device | str = "cpu") -> PackedBatch:
        """Sequences of these lengths laid back to back, as a caller that never padded them holds them;
        `pad()` gives the right-padded layout."""
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=device)
        longest = int(lengths.max()) if lengths.numel() else 0
        return cls.from_mask(torch.arange(longest, device=device)[None, :] < lengths[:, None])

    @property
    def num_tokens(self) -> int:
        return self.token_indices.numel()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        """Moved copy; lets accelerate's hooks (device_map="auto") send a packed batch to each layer's device."""
        moved = {
            field.name: getattr(self, field.name).to(device, non_blocking=non_blocking)
            for field in fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        return replace(self, **moved, attention_groups=None)

    def slices(self, max_tokens: int) -> list[tuple[slice, PackedBatch]]:
        """Runs of consecutive whole sequences of at most `max_tokens` real tokens each (a longer sequence is a
        run alone): per run, its rows of the packed (tokens, ...) layout, where each sequence's tokens are
        contiguous, and the run as a packed batch of its own."""
        device = self.token_indices.device
        runs, run_lengths, run_start, row = [], [], 0, 0
        for length in self.lengths:
            if run_lengths and row + length - run_start > max_tokens:
                runs.append((slice(run_start, row), PackedBatch.from_lengths(run_lengths, device)))
                run_lengths, run_start = [], row
            run_lengths.append(length)
            row += length
        if run_lengths:
            runs.append((slice(run_start, row), PackedBatch.from_lengths(run_lengths, device)))
        return runs

    @property
    def has_padding(self) -> bool:
        return self.num_tokens != self.batch_size * self.seq_len

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, seq, ...) -> (tokens, ...)"""
        if not self.has_padding:
            return padded.flatten(0, 1)
        return padded.flatten(0, 1).index_select(0, self.token_indices)

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, seq, ...), zeros at pad positions."""
        if not self.has_padding:
            return packed.view(self.batch_size, self.seq_len, *packed.shape[1:])
        return _scatter_rows(packed, self.token_indices, self.batch_size, self.seq_len)


def _scatter_rows(states: torch.Tensor, indices: torch.Tensor, batch_size: int, length: int) -> torch.Tensor:
    """(tokens, ...) -> (batch_size, length, ...) with row i of `states` at flat position indices[i], zeros elsewhere."""
    scattered = states.new_zeros((batch_size * length, *states.shape[1:]))
    scattered.index_copy_(0, indices, states)
    return scattered.view(batch_size, length, *states.shape[1:])


def _flash_attn(function_name: str):
    """A function of the flash-attn package, or None when it is not installed."""
    try:
        import flash_attn
    except ImportError:
        return None
    return getattr(flash_attn, function_name)


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedBatch,
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Bidirectional attention within each sequence of a packed batch.

    query/key/value: (tokens, heads, head_dim) -> (tokens, heads, head_dim).
    """
    if packed.num_tokens == 0:
        return torch.zeros_like(query)
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        flash_varlen = _flash_attn("flash_attn_varlen_func")
        if flash_varlen is not None:
            return flash_varlen(
                query, key, value,
                packed.cu_seqlens, packed.cu_seqlens, packed.max_seqlen, packed.max_seqlen,
                dropout_p=dropout, softmax_scale=scaling, causal=False,
            )

    # Regroup into (batch, heads, longest, head_dim): only the longest *real* length is padded here,
    # and only for this step, so the GEMMs around it never see padding.
    def to_batched(states: torch.Tensor) -> torch.Tensor:
        return _regroup(states, packed).transpose(1, 2)

    attn_output = F.scaled_dot_product_attention(
        to_batched(query), to_batched(key), to_batched(value),
        attn_mask=packed.key_mask, dropout_p=dropout, scale=scaling,
    )
    attn_output = attn_output.transpose(1, 2).flatten(0, 1)
    return attn_output.index_select(0, packed.attention_indices)


def packed_qkv_attention(qkv: torch.Tensor, packed: PackedBatch, num_heads: int, scaling: float) -> torch.Tensor:
    """Inference attention on a fused projection: qkv (tokens, 3 * hidden) -> (tokens, hidden).

    One scatter of the fused tensor replaces three (and one gather comes back), which matters on
    small CPUs where every pass over memory shows.
    """
    num_tokens = qkv.shape[0]
    head_dim = qkv.shape[1] // (3 * num_heads)
    if num_tokens == 0:
        return qkv.new_zeros((0, num_heads * head_dim))
    if qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16):
        flash_varlen_qkvpacked = _flash_attn("flash_attn_varlen_qkvpacked_func")
        if flash_varlen_qkvpacked is not None:
            attn_output = flash_varlen_qkvpacked(
                qkv.view(num_tokens, 3, num_heads, head_dim), packed.cu_seqlens, packed.max_seqlen,
                softmax_scale=scaling, causal=False,
            )
            return attn_output.reshape(num_tokens, num_heads * head_dim)

    qkv = qkv.view(num_tokens, 3, num_heads, head_dim)
    if not packed.has_padding:  # equal lengths back to back (a single text): regrouping is a view
        batched = qkv.view(packed.batch_size, packed.seq_len, 3, num_heads, head_dim)
    elif not qkv.is_cuda and _padded_attention_work(packed) > _PER_SEQUENCE_ABOVE:  # GPUs want one big launch
        return _attention_grouped(qkv, packed, scaling)
    else:
        batched = _regroup(qkv, packed)  # (batch, longest, 3, heads, dim)
    query, key, value = (states.transpose(1, 2) for states in batched.unbind(2))
    attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=packed.key_mask, scale=scaling)
    attn_output = attn_output.transpose(1, 2).reshape(-1, num_heads * head_dim)
    return attn_output if not packed.has_padding else attn_output.index_select(0, packed.attention_indices)


# Regrouping pads every sequence to the longest one in the batch, and attention's cost grows with the
# square of that length: once the padded work passes this multiple of the real work, sequences are
# attended in groups of similar length instead (on CPU; GPUs want one big launch). Measured per layer
# over the bench workload (xlmr.base, batch 32, one thread): 371 ms regrouped, 87 ms one SDPA per
# sequence; groups (2 threads) take another 23 % off one-per-sequence in bf16, 12 % in fp32.
_PER_SEQUENCE_ABOVE = 1.5
# Longest / shortest sequence inside one group: pads at most (1.3^2 - 1) = 69 % of a group's work,
# for ~6 SDPA calls per batch of 32 instead of 32.
_GROUP_LENGTH_RATIO = 1.3


def _padded_attention_work(packed: PackedBatch) -> float:
    real = sum(length * length for length in packed.lengths)
    return packed.batch_size * packed.max_seqlen**2 / max(real, 1)


def _attention_groups(packed: PackedBatch, device: torch.device) -> tuple:
    """Sequences grouped by similar length: per group (rows to gather, group size, longest, key mask),
    plus where each packed token lands in the concatenation of the groups' outputs."""
    if packed.attention_groups is not None:
        return packed.attention_groups
    lengths = torch.tensor(packed.lengths, dtype=torch.long)
    starts = lengths.cumsum(0) - lengths
    by_length = sorted((i for i, length in enumerate(packed.lengths) if length), key=packed.lengths.__getitem__)
    groups, current = [], []
    for sequence in by_length:
        if current and packed.lengths[sequence] > _GROUP_LENGTH_RATIO * packed.lengths[current[0]]:
            groups.append(current)
            current = []
        current.append(sequence)
    if current:
        groups.append(current)

    plans, destination, row = [], torch.empty(int(lengths.sum()), dtype=torch.long), 0
    for members in groups:
        members = torch.tensor(members)
        longest = int(lengths[members].max())
        positions = torch.arange(longest)
        real = positions[None, :] < lengths[members, None]  # (group, longest)
        # Pad slots read token 0: any finite row will do, their keys are masked and their queries dropped.
        gather = torch.where(real, starts[members, None] + positions[None, :], 0)
        destination[gather[real]] = (row + torch.arange(real.numel())).view_as(real)[real]
        row += real.numel()
        key_mask = None if bool(real.all()) else real[:, None, None, :].to(device)
        plans.append((gather.flatten().to(device), len(members), longest, key_mask))
    packed.attention_groups = (tuple(plans), destination.to(device))
    return packed.attention_groups


def _attention_grouped(qkv: torch.Tensor, packed: PackedBatch, scaling: float) -> torch.Tensor:
    """qkv (tokens, 3, heads, dim) -> (tokens, heads * dim), one SDPA per group of similar lengths."""
    plans, destination = _attention_groups(packed, qkv.device)
    _, _, num_heads, head_dim = qkv.shape
    outputs = []
    for gather, group_size, longest, key_mask in plans:
        batched = qkv.index_select(0, gather).view(group_size, longest, 3, num_heads, head_dim)
        query, key, value = (states.transpose(1, 2) for states in batched.unbind(2))
        attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=scaling)
        outputs.append(attn_output.transpose(1, 2).reshape(-1, num_heads * head_dim))
    return torch.cat(outputs).index_select(0, destination)


def _regroup(states: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
    """(tokens, ...) -> (batch, longest, ...) left-aligned; zeros (not garbage: masked keys still get multiplied) elsewhere."""
    return _scatter_rows(states, packed.attention_indices, packed.batch_size, packed.max_seqlen)
