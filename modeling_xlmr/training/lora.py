"""Parameter-efficient fine-tuning with LoRA (`peft`, the `lora` extra): wrap, save adapters, save merged.

With `--lora` the encoder's chosen linear layers (default: attention's query and value) get rank-`r` adapters
and only those and the task head train. The run saves both forms: the adapters alone in OUTPUT/adapter
(`PeftModel.from_pretrained(base, OUTPUT/adapter)`), and the model with the adapters merged into its weights
in OUTPUT itself, a plain model that loads without peft.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..common.dependencies import require
from ..common.files import install_directory
from .trainer import save_final_model

ADAPTER_DIR = "adapter"
STAGING_ADAPTER_DIR = ".adapter.tmp"
DEFAULT_TARGET_MODULES = ("query", "value")


def apply_lora(model, args: argparse.Namespace, task_type: str):
    """`model` with LoRA adapters on `args.lora_target_modules`; the head (`classifier`) trains in full."""
    peft = require("peft")
    config = peft.LoraConfig(
        task_type=getattr(peft.TaskType, task_type),
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules or DEFAULT_TARGET_MODULES),
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as error:  # e.g. no module matches the targets
        raise ValueError(f"--lora: {' '.join(str(error).split())}; choose with --lora-target-modules.") from error


def check_lora_options(args: argparse.Namespace) -> None:
    if not getattr(args, "lora", False):
        return
    if args.lora_rank < 1:
        raise ValueError(f"--lora-rank must be at least 1, got {args.lora_rank}.")
    if not args.lora_alpha > 0:
        raise ValueError(f"--lora-alpha must be positive, got {args.lora_alpha}.")
    if not 0 <= args.lora_dropout < 1:
        raise ValueError(f"--lora-dropout must be in [0, 1), got {args.lora_dropout}.")
    require("peft")  # before any data is read: a missing extra is one line


def save_adapter_and_merged(trainer, output_dir: str) -> None:
    """OUTPUT/adapter gets the adapters (staged beside it, swapped in whole); then the adapters are merged into the
    weights and OUTPUT gets that plain model (staged, config.json last). The trainer keeps the merged model."""
    staging = os.path.join(output_dir, STAGING_ADAPTER_DIR)
    trainer.save_model(staging)  # a PeftModel saves its adapters (and the trained head) only
    if trainer.is_world_process_zero():
        install_directory(Path(staging), Path(output_dir) / ADAPTER_DIR, ours=lambda name: True)  # the adapter folder is ours whole
    trainer.accelerator.wait_for_everyone()
    trainer.model = trainer.model.merge_and_unload()
    save_final_model(trainer, output_dir)


__all__ = ["ADAPTER_DIR", "DEFAULT_TARGET_MODULES", "apply_lora", "check_lora_options", "save_adapter_and_merged"]
