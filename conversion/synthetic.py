"""Synthetic fairseq XLM-R checkpoints (`model.pt`, `dict.txt`, `sentencepiece.bpe.model`), written without fairseq.

Not part of the converter: the converter's tests, the benchmarks and `xlmr demo` need fairseq checkpoints
of a tiny random XLM-R in every
layout the converter reads: the 2019 `args` Namespace of the released files, the later `cfg` dict
(with `cfg['model']` a Namespace or a dict), legacy key names, classification heads and the
released `.tar.gz` archive. The files follow what fairseq itself writes closely enough that real
fairseq (`XLMRModel.from_pretrained`) loads them too.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch

from modeling_xlmr.sentencepiece_conversion import FAIRSEQ_SPECIAL_TOKENS

from .checkpoint import (
    CHECKPOINT_FILE,
    DICTIONARY_FILE,
    PADDING_IDX,
    SENTENCEPIECE_FILE,
)

Layout = Literal["args", "cfg", "cfg-dict"]

_SAMPLE_WORDS = {
    "en": "the quick brown fox jumps over a lazy dog while children read books in the old library".split(),
    "fr": "le petit chat dort sur la chaise pendant que nous mangeons une soupe chaude ce soir".split(),
    "de": "der alte Mann geht jeden Morgen mit seinem Hund durch den grünen Wald zur Arbeit".split(),
    "es": "la ciudad tiene muchas calles estrechas donde los vecinos venden fruta fresca cada día".split(),
    "ru": "мы читаем новые книги и пьём горячий чай вечером после долгой работы в городе".split(),
    "el": "η θάλασσα είναι ήσυχη σήμερα και τα παιδιά παίζουν στην άμμο κοντά στο σπίτι".split(),
    "ar": "ذهب الطالب إلى المدرسة في الصباح وقرأ كتابا جديدا عن تاريخ المدينة القديمة".split(),
    "hi": "बच्चे सुबह स्कूल जाते हैं और शाम को पार्क में खेलते हैं जब मौसम अच्छा होता है".split(),
    "zh": "我们 今天 在 公园 里 散步 看到 很多 花 和 小鸟 天气 非常 好".split(),
    "sw": "watoto wanacheza mpira uwanjani na wazazi wao wanapika chakula cha jioni nyumbani".split(),
}


def sample_sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences in ten languages and five scripts (training text for a tiny spm)."""
    generator = torch.Generator().manual_seed(seed)
    languages = sorted(_SAMPLE_WORDS)
    sentences = []
    for index in range(count):
        words = _SAMPLE_WORDS[languages[index % len(languages)]]
        length = int(torch.randint(4, 12, (1,), generator=generator))
        picks = torch.randint(0, len(words), (length,), generator=generator).tolist()
        sentences.append(" ".join(words[i] for i in picks) + ("?" if index % 7 == 0 else "."))
    return sentences


def train_tiny_sentencepiece(directory: str | Path, vocab_size: int = 400, seed: int = 0) -> Path:
    """Train a small unigram sentencepiece model on generated multilingual text; returns its path."""
    import sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_sentences(600, seed)),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = directory / SENTENCEPIECE_FILE
    path.write_bytes(model.getvalue())
    return path


def write_fairseq_dictionary(sentencepiece_model: str | Path, path: str | Path) -> int:
    """Write fairseq's dict.txt for an spm model; returns the embedding rows XLM-R needs for it.

    spm ids 0-2 are <unk>, <s>, </s>: fairseq reserves its own four specials, so dict.txt lists the
    pieces from id 3 on, in spm order (fairseq id = spm id + 1), and the masked-LM task adds <mask>.
    """
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))
    pieces = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    lines = [f"{piece} {len(pieces) - rank}\n" for rank, piece in enumerate(pieces)]
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(FAIRSEQ_SPECIAL_TOKENS) + len(pieces) + 1


def random_fairseq_state_dict(
    vocab_rows: int,
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    max_positions: int = 512,
    classification_heads: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random XLM-R weights under fairseq 0.12's canonical names (`encoder.sentence_encoder.*`, ...).

    Values are large enough (linear weights with std 1/sqrt(fan_in), LayerNorm gains around 1) that a
    wrong mapping shows up as a big difference, not as noise under the tolerance, and they keep
    activations of order 1 at any size (larger weights saturate the attention softmax of big models,
    whose near-ties then make fp32 rounding differences between two correct implementations large).
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, mean: float = 0.0, std: float = 0.2) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=generator)

    def linear(prefix: str, out_features: int, in_features: int) -> dict[str, torch.Tensor]:
        weight = normal(out_features, in_features, std=in_features**-0.5)
        return {f"{prefix}.weight": weight, f"{prefix}.bias": normal(out_features, std=0.05)}

    def layer_norm(prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": normal(hidden_size, mean=1.0, std=0.1),
            f"{prefix}.bias": normal(hidden_size, std=0.05),
        }

    encoder = "encoder.sentence_encoder"
    positions = normal(max_positions + PADDING_IDX + 1, hidden_size)
    positions[PADDING_IDX] = 0  # fairseq zero-initialises the padding row
    embed_tokens = normal(vocab_rows, hidden_size)
    embed_tokens[PADDING_IDX] = 0
    state = {f"{encoder}.embed_tokens.weight": embed_tokens, f"{encoder}.embed_positions.weight": positions}
    state.update(layer_norm(f"{encoder}.layernorm_embedding"))
    for index in range(num_layers):
        layer = f"{encoder}.layers.{index}"
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state.update(linear(f"{layer}.self_attn.{projection}", hidden_size, hidden_size))
        state.update(layer_norm(f"{layer}.self_attn_layer_norm"))
        state.update(linear(f"{layer}.fc1", intermediate_size, hidden_size))
        state.update(linear(f"{layer}.fc2", hidden_size, intermediate_size))
        state.update(layer_norm(f"{layer}.final_layer_norm"))
    state.update(linear("encoder.lm_head.dense", hidden_size, hidden_size))
    state.update(layer_norm("encoder.lm_head.layer_norm"))
    state["encoder.lm_head.weight"] = embed_tokens  # tied: fairseq's state dict lists it under both names
    state["encoder.lm_head.bias"] = normal(vocab_rows, std=0.05)
    for name, num_classes in (classification_heads or {}).items():
        state.update(linear(f"classification_heads.{name}.dense", hidden_size, hidden_size))
        state.update(linear(f"classification_heads.{name}.out_proj", num_classes, hidden_size))
    return state


def legacy_key_names(state: Mapping[str, torch.Tensor], buffers: bool = False) -> dict[str, torch.Tensor]:
    """Rewrite canonical names the way 2019 fairseq wrote them.

    `decoder.*` prefix, `emb_layer_norm`, fused `self_attn.in_proj_weight/bias` (q, k, v stacked) and
    `layer_norms.0/1`; with `buffers`, also `.version` / `_float_tensor` buffers of the kind old
    fairseq modules saved (which fairseq 0.12's strict load itself would reject).
    """
    legacy: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            kind = key.rsplit(".", 1)[1]
            prefix = key.split(".self_attn.")[0]
            fused = torch.cat([state[f"{prefix}.self_attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")])
            key, tensor = f"{prefix}.self_attn.in_proj_{kind}", fused
        key = key.replace(".layernorm_embedding.", ".emb_layer_norm.")
        key = key.replace(".self_attn_layer_norm.", ".layer_norms.0.").replace(".final_layer_norm.", ".layer_norms.1.")
        if key.startswith("encoder."):
            key = "decoder." + key[len("encoder.") :]
        legacy[key] = tensor
    if buffers:
        legacy["decoder.sentence_encoder.embed_positions._float_tensor"] = torch.zeros(1)
        legacy["decoder.version"] = torch.tensor([2.0])
    return legacy


def with_fused_layer_duplicates(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the per-layer copies newer fairseq (0.12.x BetterTransformer path) writes beside the real weights."""
    result = dict(state)
    for key in state:
        if not key.endswith(".self_attn.q_proj.weight"):
            continue
        layer = key.split(".self_attn.")[0]
        for kind in ("weight", "bias"):
            qkv = [state[f"{layer}.self_attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
            result[f"{layer}.in_proj_{kind}"] = torch.cat(qkv)
            result[f"{layer}.out_proj_{kind}"] = state[f"{layer}.self_attn.out_proj.{kind}"].clone()
            result[f"{layer}.fc1_{kind}"] = state[f"{layer}.fc1.{kind}"].clone()
            result[f"{layer}.fc2_{kind}"] = state[f"{layer}.fc2.{kind}"].clone()
    return result


def model_arguments(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_positions: int = 512,
    **overrides,
) -> dict:
    """The model/task options fairseq's `roberta` architecture records in a checkpoint."""
    arguments = dict(
        arch="roberta_base",
        task="masked_lm",
        criterion="masked_lm",
        data=".",
        encoder_layers=num_layers,
        encoder_embed_dim=hidden_size,
        encoder_ffn_embed_dim=intermediate_size,
        encoder_attention_heads=num_heads,
        max_positions=max_positions,
        tokens_per_sample=max_positions,
        activation_fn="gelu",
        pooler_activation_fn="tanh",
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        pooler_dropout=0.0,
        encoder_layerdrop=0.0,
        sample_break_mode="complete",
        mask_prob=0.15,
        seed=1,
        load_checkpoint_heads=False,
    )
    arguments.update(overrides)
    return arguments


def checkpoint_payload(state: Mapping[str, torch.Tensor], arguments: Mapping, layout: Layout = "args") -> dict:
    """Wrap a state dict the way fairseq's trainer saves it, in the 2019 (`args`) or later (`cfg`) layout."""
    payload: dict = {
        "model": dict(state),
        "optimizer_history": [
            {
                "criterion_name": "MaskedLmLoss",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1}, "val_loss": None},
        "last_optimizer_state": {"state": {}, "param_groups": []},
    }
    if layout == "args":
        payload["args"] = argparse.Namespace(**arguments)
        return payload
    model_cfg = {**arguments, "_name": arguments["arch"]}
    payload["args"] = None
    payload["cfg"] = {
        "_name": None,
        "common": {"_name": None, "seed": arguments.get("seed", 1), "fp16": False},
        "model": dict(model_cfg) if layout == "cfg-dict" else argparse.Namespace(**model_cfg),
        "task": {
            "_name": arguments["task"],
            "data": arguments["data"],
            "tokens_per_sample": arguments["max_positions"],
        },
        "criterion": {"_name": arguments["criterion"]},
        "bpe": {"_name": "sentencepiece", "sentencepiece_model": SENTENCEPIECE_FILE},
        "tokenizer": None,
    }
    return payload


def build_fairseq_checkpoint(
    directory: str | Path,
    config,
    *,
    sentencepiece_model: str | Path | None = None,
    layout: Layout = "args",
    legacy_names: bool = False,
    legacy_buffers: bool = False,
    fused_layer_duplicates: bool = False,
    classification_heads: Mapping[str, int] | None = None,
    seed: int = 0,
    argument_overrides: Mapping | None = None,
    state_transform=None,
) -> Path:
    """Write a random XLM-R of `config`'s sizes as a fairseq model directory; returns the directory.

    `config` is an `XLMRConfig` (or anything with its size fields). Its `vocab_size` is ignored: the
    vocabulary follows the sentencepiece model (a tiny one is trained when none is given), as in a
    real checkpoint. `state_transform(state) -> state` lets tests corrupt the weights on purpose.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spm_path = directory / SENTENCEPIECE_FILE
    if sentencepiece_model is None:
        train_tiny_sentencepiece(directory, seed=seed)
    elif Path(sentencepiece_model).resolve() != spm_path.resolve():
        shutil.copyfile(sentencepiece_model, spm_path)
    vocab_rows = write_fairseq_dictionary(spm_path, directory / DICTIONARY_FILE)

    max_positions = config.max_position_embeddings - PADDING_IDX - 1
    state = random_fairseq_state_dict(
        vocab_rows,
        config.hidden_size,
        config.num_hidden_layers,
        config.intermediate_size,
        max_positions=max_positions,
        classification_heads=classification_heads,
        seed=seed,
    )
    if fused_layer_duplicates:
        state = with_fused_layer_duplicates(state)
    if legacy_names:
        state = legacy_key_names(state, buffers=legacy_buffers)
    if state_transform is not None:
        state = state_transform(state)
    arguments = model_arguments(
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
        max_positions=max_positions,
        **dict(argument_overrides or {}),
    )
    torch.save(checkpoint_payload(state, arguments, layout), directory / CHECKPOINT_FILE)
    return directory


def pack_fairseq_archive(directory: str | Path, archive: str | Path, files: Iterable[str] | None = None) -> Path:
    """Pack a fairseq model directory like the released `xlmr.*.tar.gz` (files under one top folder)."""
    directory, archive = Path(directory), Path(archive)
    top = archive.name.removesuffix(".tar.gz")
    names = list(files) if files is not None else [CHECKPOINT_FILE, DICTIONARY_FILE, SENTENCEPIECE_FILE]
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            tar.add(directory / name, arcname=f"{top}/{name}")
    return archive


__all__ = [
    "CHECKPOINT_FILE",
    "DICTIONARY_FILE",
    "SENTENCEPIECE_FILE",
    "build_fairseq_checkpoint",
    "checkpoint_payload",
    "legacy_key_names",
    "model_arguments",
    "pack_fairseq_archive",
    "random_fairseq_state_dict",
    "sample_sentences",
    "train_tiny_sentencepiece",
    "with_fused_layer_duplicates",
    "write_fairseq_dictionary",
]
