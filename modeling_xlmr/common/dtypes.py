"""The dtype names users type (`--dtype bf16`, `dtype="fp16"`), in one table for every tool."""

from __future__ import annotations

import torch

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
SHORT_NAMES = ("fp32", "fp16", "bf16")  # what command-line choices and docs list


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32'/'float32', 'fp16'/'float16'/'half', 'bf16'/'bfloat16', a torch dtype, or None (as saved)."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or a torch float dtype).")


def short_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bf16' (the name the tools print and accept)."""
    return next(name for name in SHORT_NAMES if DTYPES[name] == dtype)


__all__ = ["DTYPES", "SHORT_NAMES", "parse_dtype", "short_name"]
