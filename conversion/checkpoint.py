"""Read a fairseq XLM-R checkpoint safely and put it in one canonical form, without importing fairseq.

`read_fairseq_checkpoint(source)` accepts a fairseq model directory or the released `.tar.gz` and
returns a `FairseqCheckpoint`: hyper-parameters (from the 2019 `args` Namespace or the later
`cfg` dict), the state dict under fairseq 0.12's names, and the paths of `dict.txt` and the
sentencepiece model. Everything that is not a post-LayerNorm XLM-R/RoBERTa is refused here, before
anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_xlmr.common.files import human_size, is_no_room_error
from modeling_xlmr.sentencepiece_conversion import FAIRSEQ_SPECIAL_TOKENS, read_fairseq_dict

# What a fairseq XLM-R directory (or the released .tar.gz) holds.
CHECKPOINT_FILE = "model.pt"
DICTIONARY_FILE = "dict.txt"
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
PADDING_IDX = 1  # fairseq's Dictionary: <s> 0, <pad> 1, </s> 2, <unk> 3, then dict.txt, then <mask>


class CheckpointError(ValueError):
    """The checkpoint cannot be converted; the message names the problem and the fix."""


class _Meter:
    """Stand-in for the meter objects 2019 fairseq pickled into `extra_state` (training statistics).

    The weights-only unpickler builds it by updating `__dict__`; none of its code runs, and it is
    thrown away with the rest of the training state.
    """


# Everything `torch.load(weights_only=True)` may build beyond tensors and plain containers. A
# pickle that names any other global (os.system, builtins.eval, ...) is refused before it runs.
SAFE_GLOBALS = [
    argparse.Namespace,  # the 2019 `args` and `cfg['model']` of 0.10-0.12 checkpoints
    *[(_Meter, f"fairseq.meters.{name}") for name in ("AverageMeter", "TimeMeter", "StopwatchMeter")],
]

_LAYER_DUPLICATES = re.compile(r"\.layers\.\d+\.(in_proj|out_proj|fc1|fc2)_(weight|bias)$")


@dataclass
class HyperParameters:
    """What the converter needs from fairseq's model options."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    max_positions: int | None
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pooler_dropout: float = 0.0
    arch: str | None = None


@dataclass
class FairseqCheckpoint:
    hyper_parameters: HyperParameters
    state_dict: dict[str, torch.Tensor]
    dictionary_path: Path
    sentencepiece_path: Path
    source_sha256: str
    source_name: str
    dropped_keys: list[str] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        return self.state_dict["encoder.sentence_encoder.embed_tokens.weight"].shape[0]

    @property
    def classification_heads(self) -> dict[str, int]:
        """Head name -> number of classes, in checkpoint order."""
        heads = {}
        for key, tensor in self.state_dict.items():
            match = re.fullmatch(r"classification_heads\.(.+)\.out_proj\.weight", key)
            if match:
                heads[match.group(1)] = tensor.shape[0]
        return heads


# ----------------------------------------------------------------------------------------------
# Sources: a directory or the released archive
# ----------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_archive(source: Path) -> bool:
    return source.is_file() and (source.name.endswith((".tar.gz", ".tgz", ".tar")))


def extract_fairseq_archive(archive: Path, checkpoint_file: str, staging: Path) -> Path:
    """Stream the three files a conversion needs out of a fairseq `.tar.gz` into `staging`.

    Only regular members named exactly like the needed files are read, one block at a time (never
    the whole archive in memory), and they are written under fixed names, so no member path can
    escape `staging`.
    """
    wanted = {checkpoint_file: None, DICTIONARY_FILE: None, SENTENCEPIECE_FILE: None}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if name in wanted and wanted[name] is None and member.isfile():
                    wanted[name] = staging / name
                    with tar.extractfile(member) as reader, open(wanted[name], "wb") as writer:
                        shutil.copyfileobj(reader, writer, 1 << 20)
    except OSError as error:
        if not is_no_room_error(error):
            raise CheckpointError(
                f"{archive} is not a readable .tar.gz archive ({error}); download it again."
            ) from error
        raise CheckpointError(
            f"no room left to unpack {archive}'s files into {staging.parent} ({error.strerror}): the conversion "
            f"unpacks model.pt beside OUT and needs about twice the archive's size ({human_size(2 * archive.stat().st_size)}) "
            "free there; free some space or choose an OUT on another disk."
        ) from error
    except (tarfile.TarError, EOFError) as error:
        raise CheckpointError(f"{archive} is not a readable .tar.gz archive ({error}); download it again.") from error
    missing = [name for name, path in wanted.items() if path is None]
    if missing:
        raise CheckpointError(
            f"{archive} has no {', '.join(missing)}; a fairseq XLM-R archive holds model.pt, dict.txt and "
            "sentencepiece.bpe.model."
        )
    return staging


def locate_fairseq_files(directory: Path, checkpoint_file: str) -> tuple[Path, Path, Path]:
    paths = (directory / checkpoint_file, directory / DICTIONARY_FILE, directory / SENTENCEPIECE_FILE)
    for path in paths:
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; a fairseq XLM-R directory holds {checkpoint_file}, {DICTIONARY_FILE} and "
                f"{SENTENCEPIECE_FILE} (unpack the released archive or pass the .tar.gz itself)."
            )
    return paths


# ----------------------------------------------------------------------------------------------
# Safe loading
# ----------------------------------------------------------------------------------------------


def load_checkpoint_safely(path: Path) -> dict:
    """`torch.load(weights_only=True)` with `SAFE_GLOBALS` only: a pickle that would run code is refused."""
    mmap = zipfile.is_zipfile(path)  # memory-map the modern format: large checkpoints are not copied into RAM
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
        if names:
            raise CheckpointError(
                f"refusing {path}: its pickle asks for {', '.join(names)}, which could run code while loading "
                "(only tensors, plain containers and argparse.Namespace are allowed); if you trust the file, "
                "re-save its state dict and args with plain types."
            ) from error
        reason = " ".join(str(error).split())[-200:]
        raise CheckpointError(
            f"{path} is corrupt or truncated, or not a PyTorch checkpoint at all (unpickling failed: {reason}); "
            "download it again."
        ) from error
    except Exception as error:  # whatever a damaged or foreign file makes the unpickler trip over
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(
            f"{path} is corrupt or truncated, or not a PyTorch checkpoint at all ({reason}); download it again."
        ) from error
    if not isinstance(payload, Mapping) or not isinstance(payload.get("model"), Mapping):
        raise CheckpointError(f"{path} is not a fairseq checkpoint: it has no 'model' state dict.")
    refuse_broadcast_views(payload["model"], path)
    return payload


def refuse_broadcast_views(state: Mapping, path: Path) -> None:
    """A tensor whose elements share memory (an expanded, stride-0 view) would be written out at full size:
    a few KB in the pickle, gigabytes in safetensors. No trained weight looks like that, so refuse it."""
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.numel():
            needed = tensor.numel() * tensor.element_size()
            if needed > tensor.untyped_storage().nbytes():
                raise CheckpointError(
                    f"refusing {path}: tensor {key} {tuple(tensor.shape)} repeats {tensor.untyped_storage().nbytes()} "
                    f"bytes of data as {needed} (a broadcast view, stride {tensor.stride()}); a real checkpoint "
                    "stores every weight, so this file is damaged or crafted."
                )


# ----------------------------------------------------------------------------------------------
# Hyper-parameters from `args` or `cfg`
# ----------------------------------------------------------------------------------------------


def model_options(payload: Mapping) -> dict:
    """The model's options as a dict, from `args` (2019) or `cfg['model']` (Namespace or dict)."""
    options = payload.get("args")
    if options is None and isinstance(payload.get("cfg"), Mapping):
        options = payload["cfg"].get("model")
    if isinstance(options, argparse.Namespace):
        return vars(options)
    if isinstance(options, Mapping):
        return dict(options)
    raise CheckpointError("the checkpoint has neither 'args' nor cfg['model']; cannot read its hyper-parameters.")


def read_hyper_parameters(options: Mapping, state: Mapping[str, torch.Tensor]) -> HyperParameters:
    refuse_unsupported_architecture(options, state)
    required = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")
    missing = [name for name in required if options.get(name) is None]
    if missing:
        raise CheckpointError(f"the checkpoint's options lack {', '.join(missing)}; cannot size the model.")
    for name in required:
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(
                f"the checkpoint's option {name}={value!r} is not a positive integer; the file is damaged."
            )
    if options["encoder_embed_dim"] % options["encoder_attention_heads"]:
        raise CheckpointError(
            f"the checkpoint's encoder_embed_dim={options['encoder_embed_dim']} is not divisible by "
            f"encoder_attention_heads={options['encoder_attention_heads']}; the file is damaged."
        )
    return HyperParameters(
        num_layers=int(options["encoder_layers"]),
        hidden_size=int(options["encoder_embed_dim"]),
        intermediate_size=int(options["encoder_ffn_embed_dim"]),
        num_heads=int(options["encoder_attention_heads"]),
        max_positions=options.get("max_positions"),
        dropout=float(options.get("dropout", 0.1)),
        attention_dropout=float(options.get("attention_dropout", 0.1)),
        pooler_dropout=float(options.get("pooler_dropout", 0.0)),
        arch=options.get("arch") or options.get("_name"),
    )


def refuse_unsupported_architecture(options: Mapping, state: Mapping[str, torch.Tensor]) -> None:
    """Only post-LayerNorm XLM-R/RoBERTa maps onto the transformers layout; say why anything else doesn't."""
    # Defaults are fairseq 0.12's `roberta` base_architecture, which is also what 2019 RoBERTa hard-coded.
    problems = []
    if options.get("encoder_normalize_before", False) or any(
        k.endswith("sentence_encoder.layer_norm.weight") for k in state
    ):
        problems.append("it is pre-LayerNorm (encoder_normalize_before, like XLM-R XL/XXL)")
    if not options.get("no_scale_embedding", True):
        problems.append("it scales token embeddings by sqrt(dim) (no_scale_embedding=False)")
    if not options.get("layernorm_embedding", True):
        problems.append("it has no embedding LayerNorm (layernorm_embedding=False)")
    if options.get("no_token_positional_embeddings", False) or not options.get("encoder_learned_pos", True):
        problems.append("it does not use learned positional embeddings")
    if options.get("untie_weights_roberta", False):
        problems.append("its LM head is not tied to the embeddings (untie_weights_roberta)")
    if options.get("activation_fn", "gelu") != "gelu":
        problems.append(f"its activation is {options['activation_fn']!r}, not exact gelu")
    if options.get("pooler_activation_fn", "tanh") != "tanh":
        problems.append(f"its classification heads use {options['pooler_activation_fn']!r}, not tanh")
    if options.get("spectral_norm_classification_head", False):
        problems.append("its classification heads use spectral norm")
    if options.get("encoder_layers_to_keep"):
        problems.append("it was trained with encoder_layers_to_keep (pruned layers)")
    if problems:
        raise CheckpointError(
            "this checkpoint is not a post-LayerNorm XLM-R/RoBERTa: " + "; ".join(problems) + ". "
            "Only xlmr.base/xlmr.large-style models (and fine-tuned copies) can be converted."
        )


# ----------------------------------------------------------------------------------------------
# State dict: legacy names -> fairseq 0.12 names
# ----------------------------------------------------------------------------------------------


def canonical_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename legacy keys as fairseq's `upgrade_state_dict_named` does and drop what has no place in the model.

    Returns the new dict and the dropped keys. Renames: `decoder.*` -> `encoder.*`, `emb_layer_norm`
    -> `layernorm_embedding`, `layer_norms.0/1` -> `self_attn_layer_norm`/`final_layer_norm`, fused
    `self_attn.in_proj_*` -> q/k/v. Dropped: `.version` and `_float_tensor` buffers, the per-layer
    `in_proj/out_proj/fc1/fc2_*` copies of fairseq 0.12.x (its BetterTransformer path) and the tied
    `encoder.lm_head.weight` (checked to equal the embeddings).
    """
    canonical: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        if key.startswith("decoder."):
            key = "encoder." + key[len("decoder.") :]
        key = key.replace(".emb_layer_norm.", ".layernorm_embedding.")
        key = key.replace(".layer_norms.0.", ".self_attn_layer_norm.").replace(".layer_norms.1.", ".final_layer_norm.")
        if key.endswith((".version", "._float_tensor")) or key == "version" or _LAYER_DUPLICATES.search(key):
            dropped.append(key)
            continue
        fused = re.fullmatch(r"(.+\.self_attn)\.in_proj_(weight|bias)", key)
        if fused:
            prefix, kind = fused.groups()
            if tensor.shape[0] % 3:
                raise CheckpointError(f"{key} has {tensor.shape[0]} rows, not a multiple of 3 (fused q, k, v).")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3), strict=True):
                canonical[f"{prefix}.{name}.{kind}"] = part.clone()  # own storage: safetensors refuses shared views
            continue
        canonical[key] = tensor
    tied = canonical.pop("encoder.lm_head.weight", None)
    if tied is not None:
        embeddings = canonical.get("encoder.sentence_encoder.embed_tokens.weight")
        if embeddings is None or tied.shape != embeddings.shape or not torch.equal(tied, embeddings):
            raise CheckpointError(
                "the LM head weight differs from the token embeddings (an untied head); only tied XLM-R heads convert."
            )
        dropped.append("encoder.lm_head.weight")
    return canonical, dropped


def check_state_dict(state: Mapping[str, torch.Tensor], hp: HyperParameters) -> None:
    """Every tensor the model needs is present, with the shapes the options promise; nothing is left over."""
    encoder = "encoder.sentence_encoder"
    hidden, ffn = hp.hidden_size, hp.intermediate_size
    expected: dict[str, tuple[int, ...] | None] = {
        f"{encoder}.embed_tokens.weight": None,
        f"{encoder}.embed_positions.weight": None,
        f"{encoder}.layernorm_embedding.weight": (hidden,),
        f"{encoder}.layernorm_embedding.bias": (hidden,),
        "encoder.lm_head.dense.weight": (hidden, hidden),
        "encoder.lm_head.dense.bias": (hidden,),
        "encoder.lm_head.layer_norm.weight": (hidden,),
        "encoder.lm_head.layer_norm.bias": (hidden,),
        "encoder.lm_head.bias": None,
    }
    for index in range(hp.num_layers):
        layer = f"{encoder}.layers.{index}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            expected[f"{layer}.self_attn.{projection}.weight"] = (hidden, hidden)
            expected[f"{layer}.self_attn.{projection}.bias"] = (hidden,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            expected[f"{layer}.{norm}.weight"] = (hidden,)
            expected[f"{layer}.{norm}.bias"] = (hidden,)
        expected.update({f"{layer}.fc1.weight": (ffn, hidden), f"{layer}.fc1.bias": (ffn,)})
        expected.update({f"{layer}.fc2.weight": (hidden, ffn), f"{layer}.fc2.bias": (hidden,)})
    missing = [key for key in expected if key not in state]
    if missing:
        raise CheckpointError(
            f"the state dict lacks {len(missing)} XLM-R tensor(s), e.g. {missing[0]}; "
            "is this an XLM-R/RoBERTa checkpoint?"
        )
    for key, shape in expected.items():
        if shape is not None and tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{key} has shape {tuple(state[key].shape)}, but the checkpoint's options imply {shape}."
            )
    embeddings = state[f"{encoder}.embed_tokens.weight"]
    if embeddings.dim() != 2 or embeddings.shape[1] != hidden:
        raise CheckpointError(f"embed_tokens has shape {tuple(embeddings.shape)}; expected (vocab, {hidden}).")
    if tuple(state["encoder.lm_head.bias"].shape) != (embeddings.shape[0],):
        raise CheckpointError("encoder.lm_head.bias does not match the vocabulary size of embed_tokens.")
    positions = state[f"{encoder}.embed_positions.weight"]
    if hp.max_positions is not None and positions.shape[0] != hp.max_positions + PADDING_IDX + 1:
        raise CheckpointError(
            f"embed_positions has {positions.shape[0]} rows but max_positions={hp.max_positions} needs "
            f"{hp.max_positions + PADDING_IDX + 1} (positions start after the padding index)."
        )
    if hp.hidden_size % hp.num_heads:
        raise CheckpointError(f"encoder_embed_dim {hidden} is not divisible by encoder_attention_heads {hp.num_heads}.")
    heads = re.compile(r"classification_heads\.[^.]+\.(dense|out_proj)\.(weight|bias)")
    leftover = [key for key in state if key not in expected and not heads.fullmatch(key)]
    if leftover:
        raise CheckpointError(
            f"the state dict has tensors an XLM-R does not use, e.g. {leftover[0]} ({len(leftover)} in all); "
            "refusing to drop them silently."
        )


def count_dictionary_entries(path: Path) -> int:
    """Entries fairseq's Dictionary reads from dict.txt (`token count [#fairseq:overwrite]` per line)."""
    try:
        return len(read_fairseq_dict(path))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error if isinstance(error, ValueError) else f"cannot read {path}: {error}"
        raise CheckpointError(f"{reason}; use the dict.txt released with this model.pt.") from error


def check_sentencepiece_model(path: Path) -> None:
    from modeling_xlmr.sentencepiece_conversion import load_model_proto

    try:
        load_model_proto(path)
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{error}; use the sentencepiece.bpe.model released with this model.pt.") from error


def check_vocabulary(dictionary_path: Path, vocab_rows: int) -> None:
    expected = len(FAIRSEQ_SPECIAL_TOKENS) + count_dictionary_entries(dictionary_path) + 1  # + <mask>
    if expected != vocab_rows:
        raise CheckpointError(
            f"{dictionary_path} gives {expected} tokens (4 specials + its entries + <mask>) but the embedding matrix "
            f"has {vocab_rows} rows; use the dict.txt that was released with this model.pt."
        )


# ----------------------------------------------------------------------------------------------
# Everything together
# ----------------------------------------------------------------------------------------------


def read_fairseq_checkpoint(
    source: str | Path, staging: Path, checkpoint_file: str = CHECKPOINT_FILE
) -> FairseqCheckpoint:
    """Read, check and canonicalise a fairseq XLM-R checkpoint (directory or `.tar.gz`).

    `staging` is an empty scratch directory the caller deletes; an archive's files are streamed
    into it.
    """
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source} does not exist; pass a fairseq model directory or its .tar.gz.")
    directory = extract_fairseq_archive(source, checkpoint_file, staging) if is_archive(source) else source
    if not directory.is_dir():
        raise CheckpointError(f"{source} is neither a directory nor a .tar.gz archive.")
    checkpoint_path, dictionary_path, sentencepiece_path = locate_fairseq_files(directory, checkpoint_file)
    hashed = source if source.is_file() else checkpoint_path

    check_sentencepiece_model(sentencepiece_path)
    payload = load_checkpoint_safely(checkpoint_path)
    state, dropped = canonical_state_dict(payload["model"])
    hp = read_hyper_parameters(model_options(payload), state)
    check_state_dict(state, hp)
    checkpoint = FairseqCheckpoint(
        hyper_parameters=hp,
        state_dict=state,
        dictionary_path=dictionary_path,
        sentencepiece_path=sentencepiece_path,
        source_sha256=file_sha256(hashed),
        source_name=hashed.name,
        dropped_keys=dropped,
    )
    check_vocabulary(dictionary_path, checkpoint.vocab_size)
    return checkpoint


__all__ = [
    "CHECKPOINT_FILE",
    "DICTIONARY_FILE",
    "PADDING_IDX",
    "SENTENCEPIECE_FILE",
    "CheckpointError",
    "FairseqCheckpoint",
    "HyperParameters",
    "SAFE_GLOBALS",
    "read_fairseq_checkpoint",
]
