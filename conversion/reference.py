"""An XLM-R forward pass written directly from a fairseq state dict, in plain torch.

It is the yardstick every conversion is checked against, so it shares no code with the model
classes: it reads fairseq's tensor names and follows fairseq's RoBERTa (post-LayerNorm layers,
embedding scale 1, positions = cumsum of non-pad tokens + padding index, exact erf GELU, LM head
dense -> gelu -> LayerNorm -> embeddings^T + bias, classification head tanh(dense(<s>)) -> out_proj).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ENCODER = "encoder.sentence_encoder"
LAYER_NORM_EPS = 1e-5


@dataclass
class ReferenceOutput:
    hidden_states: list[torch.Tensor]  # embeddings output, then every layer's output (B, T, C)
    lm_logits: torch.Tensor  # (B, T, vocab)
    head_logits: dict[str, torch.Tensor]  # classification head name -> (B, num_classes)


def _linear(state: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, state[f"{prefix}.weight"].to(x.dtype), state[f"{prefix}.bias"].to(x.dtype))


def _layer_norm(state: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    weight, bias = state[f"{prefix}.weight"].to(x.dtype), state[f"{prefix}.bias"].to(x.dtype)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, LAYER_NORM_EPS)


def _tied_projection(x: torch.Tensor, embeddings: torch.Tensor, chunk_rows: int = 32768) -> torch.Tensor:
    """x @ embeddings^T, a block of vocabulary rows at a time (a float64 copy of 250k rows would be 2 GB)."""
    return torch.cat([F.linear(x, block.to(x.dtype)) for block in embeddings.split(chunk_rows)], dim=-1)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _self_attention(
    state: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor, padding: torch.Tensor, num_heads: int
) -> torch.Tensor:
    batch, length, hidden = x.shape
    head_dim = hidden // num_heads

    def heads(projection: str) -> torch.Tensor:
        return _linear(state, f"{prefix}.{projection}", x).view(batch, length, num_heads, head_dim).transpose(1, 2)

    q = heads("q_proj") * head_dim**-0.5
    k, v = heads("k_proj"), heads("v_proj")
    scores = q @ k.transpose(-1, -2)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    context = scores.softmax(dim=-1) @ v
    return _linear(state, f"{prefix}.out_proj", context.transpose(1, 2).reshape(batch, length, hidden))


def fairseq_positions(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq's `utils.make_positions`: padding_idx+1, +2, ... over real tokens; padding_idx on pads."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


@torch.no_grad()
def reference_forward(
    state: Mapping[str, torch.Tensor],
    tokens: torch.Tensor,
    num_heads: int,
    padding_idx: int = 1,
    heads: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float64,
) -> ReferenceOutput:
    """Run the fairseq-named weights in `state` (canonical 0.12 names) on `tokens` (B, T).

    It computes in float64 by default, so its own rounding error is negligible and a comparison
    measures the converted model's error alone; outputs are in `dtype`.
    """
    padding = tokens.eq(padding_idx)
    embeddings = state[f"{ENCODER}.embed_tokens.weight"]
    x = embeddings[tokens].to(dtype)
    x = x + state[f"{ENCODER}.embed_positions.weight"][fairseq_positions(tokens, padding_idx)].to(dtype)
    x = _layer_norm(state, f"{ENCODER}.layernorm_embedding", x)
    hidden_states = [x]
    layer = 0
    while f"{ENCODER}.layers.{layer}.fc1.weight" in state:
        prefix = f"{ENCODER}.layers.{layer}"
        x = _layer_norm(
            state,
            f"{prefix}.self_attn_layer_norm",
            x + _self_attention(state, f"{prefix}.self_attn", x, padding, num_heads),
        )
        feed_forward = _linear(state, f"{prefix}.fc2", _gelu(_linear(state, f"{prefix}.fc1", x)))
        x = _layer_norm(state, f"{prefix}.final_layer_norm", x + feed_forward)
        hidden_states.append(x)
        layer += 1

    lm = _layer_norm(state, "encoder.lm_head.layer_norm", _gelu(_linear(state, "encoder.lm_head.dense", x)))
    lm_logits = _tied_projection(lm, embeddings) + state["encoder.lm_head.bias"].to(dtype)

    head_logits = {}
    for name in heads:
        pooled = torch.tanh(_linear(state, f"classification_heads.{name}.dense", x[:, 0]))
        head_logits[name] = _linear(state, f"classification_heads.{name}.out_proj", pooled)
    return ReferenceOutput(hidden_states=hidden_states, lm_logits=lm_logits, head_logits=head_logits)


__all__ = ["ReferenceOutput", "fairseq_positions", "reference_forward"]
