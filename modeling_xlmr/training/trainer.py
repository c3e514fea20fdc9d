"""Trainer plumbing shared by the fine-tuning tasks: one home for what `xlmr finetune` / `xlmr evaluate` do
whatever the task.

Every function takes the parsed options of those commands (attribute names as the flags, see
`modeling_xlmr.cli.finetune`), so a task module only adds what is its own: data, labels, the model class and
the metrics. All of them work unchanged under `accelerate launch` (DDP): only the main process writes files.
"""

from __future__ import annotations

import argparse
import os
import shutil

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_xlmr import XLMRConfig
from ..hub import loading
from .checkpoints import check_checkpoint_files

STAGING_DIR = ".final-model.tmp"
SAVE_LAST = "config.json"  # moved last: a directory without it is not (yet) a loadable model


def check_training_options(args: argparse.Namespace) -> None:
    """Option conflicts every task refuses before any file is read."""
    if args.bf16 and args.fp16:
        raise ValueError("--bf16 and --fp16 exclude each other; pick one.")
    if getattr(args, "eval_strategy", "no") != "no" and not args.eval_file:
        raise ValueError(f"--eval-strategy {args.eval_strategy} needs --eval-file.")


def check_output_dir(args: argparse.Namespace, resuming: bool) -> None:
    """The output may not be the model it starts from, nor a directory holding something else."""
    output = os.path.realpath(args.output_dir)
    if os.path.isdir(args.model) and output == os.path.realpath(args.model):
        raise ValueError(
            f"--output-dir {args.output_dir} is the model directory: fine-tuning would overwrite the pretrained "
            "weights and config; choose a new directory."
        )
    if os.path.isdir(output) and os.listdir(output) and not resuming and not args.overwrite_output_dir:
        raise ValueError(
            f"--output-dir {args.output_dir} is not empty; choose a new directory, resume with "
            "--resume-from-checkpoint, or pass --overwrite-output-dir to write over (nothing there is deleted)."
        )


def resolve_checkpoint(args: argparse.Namespace) -> str | None:
    """The checkpoint `--resume-from-checkpoint` names (a checkpoint-N directory or 'latest'), checked."""
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        latest = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if latest is None:
            raise ValueError(
                f"No checkpoint-N directory in {args.output_dir} to resume from; drop --resume-from-checkpoint."
            )
        return latest
    if not os.path.isfile(os.path.join(args.resume_from_checkpoint, "trainer_state.json")):
        raise ValueError(
            f"{args.resume_from_checkpoint} is not a Trainer checkpoint (no trainer_state.json); "
            "give a checkpoint-N directory from --output-dir, or 'latest'."
        )
    check_checkpoint_files(args.resume_from_checkpoint)
    return args.resume_from_checkpoint


def whole_if_integral(value: float | None):
    # Trainer reads floats < 1 as fractions of the run, integers as step counts.
    return int(value) if value is not None and value >= 1 and float(value).is_integer() else value


def training_arguments(args: argparse.Namespace, **overrides) -> TrainingArguments:
    """`TrainingArguments` from the `xlmr finetune` options; `overrides` are the task's own settings."""
    settings = {
        "output_dir": args.output_dir,
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "per_device_eval_batch_size": args.per_device_eval_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "warmup_steps": whole_if_integral(args.warmup),
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "bf16": args.bf16,
        "fp16": args.fp16,
        "activation_checkpointing": args.gradient_checkpointing,
        "train_sampling_strategy": "group_by_length" if args.group_by_length else "random",
        "eval_strategy": args.eval_strategy,
        "eval_steps": whole_if_integral(args.eval_steps),
        "save_strategy": args.save_strategy,
        "save_steps": whole_if_integral(args.save_steps),
        "save_total_limit": args.save_total_limit,
        "logging_steps": whole_if_integral(args.logging_steps),
        "use_cpu": args.use_cpu,
        "dataloader_pin_memory": pin_memory(args),
        "report_to": "none",
        # Every parameter gets a gradient (the heads have no unused pooler), so DDP needn't search for unused ones.
        "ddp_find_unused_parameters": False,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def evaluation_arguments(args: argparse.Namespace, output_dir: str) -> TrainingArguments:
    """`TrainingArguments` for `xlmr evaluate` (prediction only, in the requested precision)."""
    return TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        bf16_full_eval=args.bf16,
        fp16_full_eval=args.fp16,
        use_cpu=args.use_cpu,
        dataloader_pin_memory=pin_memory(args),
        report_to="none",
    )


def pin_memory(args: argparse.Namespace) -> bool:
    return torch.cuda.is_available() and not args.use_cpu  # pinning without an accelerator only warns


def load_checked_config(args: argparse.Namespace) -> XLMRConfig:
    """The model's config, refusing a `--max-length` longer than the model accepts."""
    config = XLMRConfig.from_pretrained(args.model)
    if args.max_length > config.max_sequence_length:
        raise ValueError(
            f"--max-length {args.max_length} is longer than {args.model} accepts "
            f"({config.max_sequence_length} tokens); use at most {config.max_sequence_length}."
        )
    return config


def is_placeholder_labels(id2label: dict[int, str]) -> bool:
    """True for transformers' default `LABEL_0, LABEL_1, ...` names, which say nothing about the task."""
    return all(str(name) == f"LABEL_{index}" for index, name in id2label.items())


def load_tokenizer(args: argparse.Namespace):
    """The model's tokenizer, running none of the repo's code unless --trust-remote-code."""
    return loading.load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)


def save_final_model(trainer, output_dir: str) -> None:
    """Save into a staging directory, then move the files into OUTPUT_DIR, config.json last."""
    staging = os.path.join(output_dir, STAGING_DIR)
    trainer.save_model(staging)  # every process calls it; only the main one writes
    if trainer.is_world_process_zero():
        publish_staged(staging, output_dir)
    trainer.accelerator.wait_for_everyone()


def publish_staged(staging: str, output_dir: str) -> None:
    """Move every file of `staging` into `output_dir` (config.json last) and remove the emptied `staging`."""
    names = sorted(os.listdir(staging), key=lambda name: name == SAVE_LAST)
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    shutil.rmtree(staging)


def name_of(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


__all__ = [
    "check_output_dir",
    "check_training_options",
    "evaluation_arguments",
    "is_placeholder_labels",
    "load_checked_config",
    "load_tokenizer",
    "name_of",
    "pin_memory",
    "publish_staged",
    "resolve_checkpoint",
    "save_final_model",
    "training_arguments",
    "whole_if_integral",
]
