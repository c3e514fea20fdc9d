"""fairseq names -> transformers' XLM-RoBERTa names, and the config that describes the result.

The table is the one of transformers' own `convert_roberta_original_pytorch_checkpoint_to_pytorch.py`,
applied to state-dict keys instead of live fairseq modules, so fairseq is never imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .checkpoint import PADDING_IDX, FairseqCheckpoint

# (fairseq pattern, transformers replacement); `encoder.sentence_encoder.` is stripped first.
_ENCODER_RULES = [
    (r"embed_tokens\.weight", "roberta.embeddings.word_embeddings.weight"),
    (r"embed_positions\.weight", "roberta.embeddings.position_embeddings.weight"),
    (r"layernorm_embedding\.(weight|bias)", r"roberta.embeddings.LayerNorm.\1"),
    (r"layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"roberta.encoder.layer.\1.attention.self.query.\2"),
    (r"layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", r"roberta.encoder.layer.\1.attention.self.key.\2"),
    (r"layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", r"roberta.encoder.layer.\1.attention.self.value.\2"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"roberta.encoder.layer.\1.attention.output.dense.\2"),
    (r"layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"roberta.encoder.layer.\1.attention.output.LayerNorm.\2"),
    (r"layers\.(\d+)\.fc1\.(weight|bias)", r"roberta.encoder.layer.\1.intermediate.dense.\2"),
    (r"layers\.(\d+)\.fc2\.(weight|bias)", r"roberta.encoder.layer.\1.output.dense.\2"),
    (r"layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"roberta.encoder.layer.\1.output.LayerNorm.\2"),
]
_LM_HEAD_RULES = [
    (r"dense\.(weight|bias)", r"lm_head.dense.\1"),
    (r"layer_norm\.(weight|bias)", r"lm_head.layer_norm.\1"),
    # The decoder weight is tied to the word embeddings and its bias to lm_head.bias: transformers
    # re-ties both on load, so (like save_pretrained) only the originals are stored.
    (r"bias", "lm_head.bias"),
]


def _rename(key: str, rules: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(key)


def transformers_state_dict(checkpoint: FairseqCheckpoint, head: str | None) -> dict[str, torch.Tensor]:
    """The model.safetensors contents: encoder + LM head (+ `head` as `classifier.*`), transformers' names.

    fairseq has no token-type embedding; transformers' XLM-R has one row, stored as zeros so adding
    it changes nothing.
    """
    state = checkpoint.state_dict
    hf: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("encoder.sentence_encoder."):
            hf[_rename(key[len("encoder.sentence_encoder.") :], _ENCODER_RULES)] = tensor
        elif key.startswith("encoder.lm_head."):
            hf[_rename(key[len("encoder.lm_head.") :], _LM_HEAD_RULES)] = tensor
        elif head is not None and key.startswith(f"classification_heads.{head}."):
            hf["classifier." + key[len(f"classification_heads.{head}.") :]] = tensor
    hidden = checkpoint.hyper_parameters.hidden_size
    dtype = hf["roberta.embeddings.word_embeddings.weight"].dtype
    hf["roberta.embeddings.token_type_embeddings.weight"] = torch.zeros(1, hidden, dtype=dtype)
    return hf


def classification_head_tensors(
    checkpoint: FairseqCheckpoint, names: Sequence[str]
) -> dict[str, dict[str, torch.Tensor]]:
    """{NAME: {"dense.weight": ..., "out_proj.bias": ...}} for the heads in `names`."""
    prefix = "classification_heads."
    heads: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    for key, tensor in checkpoint.state_dict.items():
        if key.startswith(prefix):
            name, _, tensor_name = key[len(prefix) :].partition(".")
            if name in heads:
                heads[name][tensor_name] = tensor
    return heads


def config_kwargs(
    checkpoint: FairseqCheckpoint,
    head: str | None,
    labels: Sequence[str] | None,
    dtype: torch.dtype,
) -> dict:
    """Keyword arguments for `XLMRConfig` describing the converted repo.

    Hyper-parameters follow transformers' converter: positions from the table (514 for 512 tokens),
    `type_vocab_size=1`, `layer_norm_eps=1e-5` (PyTorch's default, which fairseq uses).
    `fairseq_classification_heads` lists every head of the checkpoint (name -> num_classes and
    labels), and `fairseq_head_name` the one stored as `classifier`.
    """
    hp = checkpoint.hyper_parameters
    heads = checkpoint.classification_heads
    kwargs = dict(
        vocab_size=checkpoint.vocab_size,
        hidden_size=hp.hidden_size,
        num_hidden_layers=hp.num_layers,
        num_attention_heads=hp.num_heads,
        intermediate_size=hp.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=hp.dropout,
        attention_probs_dropout_prob=hp.attention_dropout,
        classifier_dropout=hp.pooler_dropout,
        max_position_embeddings=checkpoint.state_dict["encoder.sentence_encoder.embed_positions.weight"].shape[0],
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=PADDING_IDX,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["XLMRForMaskedLM"] + (["XLMRForSequenceClassification"] if head else []),
        add_pooling_layer=False,  # fairseq's RoBERTa has no pooler: AutoModel must not invent a random one
        dtype=str(dtype).removeprefix("torch."),
        fairseq_classification_heads={
            name: {"num_classes": num_classes, "labels": list(labels) if name == head and labels else None}
            for name, num_classes in heads.items()
        },
        fairseq_head_name=head,
    )
    if head is not None:
        names = list(labels) if labels else [f"LABEL_{i}" for i in range(heads[head])]
        kwargs["id2label"] = dict(enumerate(names))
        kwargs["label2id"] = {name: i for i, name in enumerate(names)}
    return kwargs


def cast_floats(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating tensors to `dtype`, contiguous and owning their memory (no shared storage, no mmap views)."""
    return {
        key: tensor.to(dtype).contiguous() if tensor.is_floating_point() else tensor for key, tensor in state.items()
    }


__all__ = ["cast_floats", "classification_head_tensors", "config_kwargs", "transformers_state_dict"]
