"""fairseq XLM-R checkpoint -> Hub-ready transformers repository (safetensors, tokenizer, remote code, card).

`convert_fairseq_checkpoint(source, output)` reads the checkpoint safely (`checkpoint.py`), renames
the weights (`mapping.py`), writes everything into a temporary directory beside `output`, reloads
it through transformers' Auto classes, compares that with a forward pass computed straight from the
fairseq weights (`reference.py`), and only then renames the directory to `output`. A failed or
interrupted run leaves no `output`.
"""

from __future__ import annotations

import fnmatch
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

from modeling_xlmr.common.dtypes import SHORT_NAMES, parse_dtype
from modeling_xlmr.common.files import (
    apply_umask,
    check_output_directory,
    human_size,
    install_directory,
    is_no_room_error,
    staging_directory,
)
from modeling_xlmr.configuration_xlmr import remote_code_files
from modeling_xlmr.hub.heads import HEADS_FILE, write_heads_file

from .checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    FairseqCheckpoint,
    read_fairseq_checkpoint,
)
from .mapping import (
    cast_floats,
    classification_head_tensors,
    config_kwargs,
    transformers_state_dict,
)
from .verification import VerificationReport, verify_conversion

# xlmr.large in fp32 (2.2 GB) is sharded, xlmr.base (1.1 GB) is one file.
DEFAULT_MAX_SHARD_SIZE = "2GB"
# Every name `convert` writes into OUT (besides the remote-code modules): what --overwrite may replace.
OUTPUT_PATTERNS = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    HEADS_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "README.md",
)


def is_conversion_output(name: str) -> bool:
    return name in remote_code_files() or any(fnmatch.fnmatchcase(name, pattern) for pattern in OUTPUT_PATTERNS)


class ConversionError(ValueError):
    """The conversion cannot go on; the message names the problem and the fix."""


@dataclass
class ConversionResult:
    output: Path
    parameter_count: int
    head: str | None
    verification: VerificationReport


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def choose_head(checkpoint: FairseqCheckpoint, head: str | None, labels: Sequence[str] | None) -> str | None:
    """The classification head stored as `classifier`: `head`, or the only one the checkpoint has."""
    heads = checkpoint.classification_heads
    if head is None and len(heads) == 1:
        head = next(iter(heads))
    if head is None:
        if len(heads) > 1:
            raise ConversionError(
                f"the checkpoint has {len(heads)} classification heads ({', '.join(heads)}); choose the one "
                "AutoModelForSequenceClassification loads with --head NAME (all are kept)."
            )
        if labels:
            raise ConversionError("--labels was given but the checkpoint has no classification head.")
        return None
    if head not in heads:
        available = ", ".join(heads) if heads else "none"
        raise ConversionError(f"--head {head!r} is not in the checkpoint (its classification heads: {available}).")
    if labels and len(labels) != heads[head]:
        raise ConversionError(f"--labels gives {len(labels)} names but head {head!r} has {heads[head]} classes.")
    if labels and len(set(labels)) != len(labels):
        raise ConversionError("--labels has duplicate names; each class needs its own label.")
    return head


def write_repository(
    checkpoint: FairseqCheckpoint,
    directory: Path,
    head: str | None,
    labels: Sequence[str] | None,
    dtype: torch.dtype,
    max_shard_size: int | str,
) -> tuple[dict, int]:
    """Write weights, config, remote code and tokenizer into `directory`; returns (config dict, parameter count)."""
    from modeling_xlmr.configuration_xlmr import XLMRConfig, copy_remote_code

    weights = cast_floats(transformers_state_dict(checkpoint, head), dtype)
    save_torch_state_dict(weights, directory, max_shard_size=max_shard_size, metadata={"format": "pt"})
    parameter_count = sum(tensor.numel() for tensor in weights.values())
    del weights

    if checkpoint.classification_heads:  # all of them, so `predict(NAME, ...)` finds every head in one file
        heads = classification_head_tensors(checkpoint, list(checkpoint.classification_heads))
        write_heads_file(directory / HEADS_FILE, {name: cast_floats(state, dtype) for name, state in heads.items()})

    config = XLMRConfig(**config_kwargs(checkpoint, head, labels, dtype))
    config.save_pretrained(directory)
    save_tokenizer(checkpoint, directory)
    copy_remote_code(directory)
    return config.to_dict(), parameter_count


def write_model_card(
    directory: Path,
    checkpoint: FairseqCheckpoint,
    config: dict,
    parameter_count: int,
    report: VerificationReport,
    repo_id: str | None,
) -> None:
    from model_cards import render_model_card

    card = render_model_card(
        config=config,
        parameter_count=parameter_count,
        source_name=checkpoint.source_name,
        source_sha256=checkpoint.source_sha256,
        max_abs_difference=report.max_abs_difference,
        repo_id=repo_id,
    )
    (directory / "README.md").write_text(card, encoding="utf-8")


def save_tokenizer(checkpoint: FairseqCheckpoint, directory: Path) -> None:
    """tokenizer.json, tokenizer_config.json (with auto_map), the .py and the original sentencepiece model."""
    from modeling_xlmr.tokenization_xlmr import XLMRTokenizerFast

    tokenizer = XLMRTokenizerFast.from_pretrained(str(checkpoint.sentencepiece_path.parent))
    if len(tokenizer) != checkpoint.vocab_size:
        raise ConversionError(
            f"the tokenizer built from {checkpoint.sentencepiece_path.name} and dict.txt has {len(tokenizer)} tokens "
            f"but the embedding matrix has {checkpoint.vocab_size} rows; use the files released with this model.pt."
        )
    tokenizer.save_pretrained(str(directory))
    if not (directory / checkpoint.sentencepiece_path.name).is_file():
        shutil.copyfile(checkpoint.sentencepiece_path, directory / checkpoint.sentencepiece_path.name)


def check_finite_weights(checkpoint: FairseqCheckpoint, dtype: torch.dtype, dtype_name: str) -> None:
    """Every weight must be a finite number once stored in `dtype`: a NaN or an overflow would "verify"
    as NaN against NaN on every output, and serve nothing but NaN."""
    for key, tensor in checkpoint.state_dict.items():
        if not tensor.is_floating_point():
            continue
        if not torch.isfinite(tensor).all():
            raise ConversionError(f"tensor {key} of the checkpoint holds NaN or infinite values; the file is damaged.")
        if not torch.isfinite(tensor.to(dtype)).all():
            raise ConversionError(
                f"tensor {key} overflows {dtype_name} (largest |value| {float(tensor.abs().max()):.3g}); convert "
                "with --dtype fp32 or bf16."
            )


def _needed_space(source: str | Path) -> str:
    """Roughly what a conversion writes beside OUT: the weights, and model.pt itself when unpacked from an archive."""
    source = Path(source)
    size = source.stat().st_size if source.is_file() else sum(f.stat().st_size for f in source.glob("*") if f.is_file())
    return human_size((2 if source.is_file() else 1) * size)


def convert_fairseq_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    checkpoint_file: str = CHECKPOINT_FILE,
    head: str | None = None,
    labels: Sequence[str] | None = None,
    dtype: str = "fp32",
    overwrite: bool = False,
    force: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    tolerance: float = 1e-4,
    repo_id: str | None = None,
    log: Callable[[str], None] = _log_to_stderr,
) -> ConversionResult:
    """Convert a fairseq XLM-R (directory or released `.tar.gz`) into a verified transformers repo at `output`.

    `output` then holds config.json (with `auto_map`), model.safetensors (sharded above
    `max_shard_size`), classification_heads.safetensors when the checkpoint has heads (see
    `heads.py`), the tokenizer files, the remote-code .py files and README.md. The repo is reloaded
    through the Auto classes and must match a forward pass computed from the fairseq weights within
    `tolerance` (max abs difference; a NaN or infinity anywhere fails), or nothing is written.
    `repo_id` only fills the card's examples.

    OUT may not be SRC, contain it or lie inside it. An existing OUT is replaced only with `overwrite`, and
    only if it holds nothing but what this function writes (`force` keeps its other files beside the new
    output); the old files stay until the new output is complete.
    """
    if dtype not in SHORT_NAMES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join(SHORT_NAMES)}.")
    torch_dtype = parse_dtype(dtype)
    output = Path(output)
    try:
        check_output_directory(output, [Path(source)], overwrite, force, is_conversion_output)
    except ValueError as error:
        raise ConversionError(str(error)) from error

    staging = staging_directory(output, "source")
    built = staging_directory(output, "partial")
    try:
        log(f"reading {source}")
        checkpoint = read_fairseq_checkpoint(source, staging, checkpoint_file)
        chosen = choose_head(checkpoint, head, labels)
        hp = checkpoint.hyper_parameters
        log(
            f"XLM-R with {hp.num_layers} layers, hidden {hp.hidden_size}, {hp.num_heads} heads, vocabulary "
            f"{checkpoint.vocab_size}; classification heads: {', '.join(checkpoint.classification_heads) or 'none'}"
        )
        check_finite_weights(checkpoint, torch_dtype, dtype)
        log(f"writing {dtype} weights, config, tokenizer and remote code")
        config, parameter_count = write_repository(checkpoint, built, chosen, labels, torch_dtype, max_shard_size)
        log("verifying: reloading through the Auto classes and comparing with the fairseq weights")
        report = verify_conversion(built, checkpoint, chosen, torch_dtype)
        log(report.summary())
        if not report.max_abs_difference <= tolerance:
            raise ConversionError(
                f"verification failed: max abs difference {report.max_abs_difference:.3g} ({report.worst}) "
                f"exceeds {tolerance:g}; the converted model does not reproduce the checkpoint."
            )
        write_model_card(built, checkpoint, config, parameter_count, report, repo_id)
        apply_umask(built)
        check_output_directory(output, [Path(source)], overwrite, force, is_conversion_output)  # unchanged meanwhile?
        install_directory(built, output, is_conversion_output)
    except CheckpointError as error:
        raise ConversionError(str(error)) from error
    except Exception as error:
        if not is_no_room_error(error):
            raise
        raise ConversionError(
            f"no room left to write the conversion beside {output} ({' '.join(str(error).split())[:160]}); "
            f"it needs about {_needed_space(source)} free in {output.parent.resolve()}: "
            "free some space or choose an OUT on another disk."
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(built, ignore_errors=True)
    log(f"wrote {output} ({parameter_count:,} parameters)")
    return ConversionResult(output=output, parameter_count=parameter_count, head=chosen, verification=report)


__all__ = ["ConversionError", "ConversionResult", "convert_fairseq_checkpoint"]
