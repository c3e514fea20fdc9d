"""The dtype names users type (`--dtype bf16`, `dtype="fp16"`, `dtype="int8"`), in one table for every tool.

"int8" (`torch.int8`) is not a weight dtype: it asks for the int8 inference mode, fp32 weights whose encoder
projections run as int8 GEMMs on CPU (`XLMRPreTrainedModel.quantize_for_inference`).
"""

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
    "int8": torch.int8,
}
SHORT_NAMES = ("fp32", "fp16", "bf16")  # weight dtypes: what a saved model can hold
INFERENCE_NAMES = (*SHORT_NAMES, "int8")  # what inference tools accept


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32'/'float32', 'fp16'/'float16'/'half', 'bf16'/'bfloat16', 'int8', a torch dtype, or None (as saved)."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(
        f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or torch.float32/float16/bfloat16/int8)."
    )


def load_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype to load weights in: int8 inference loads fp32 weights and quantises them afterwards."""
    return torch.float32 if dtype == torch.int8 else dtype


def short_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bf16' (the name the tools print and accept)."""
    return next(name for name in INFERENCE_NAMES if DTYPES[name] == dtype)


__all__ = ["DTYPES", "INFERENCE_NAMES", "SHORT_NAMES", "load_dtype", "parse_dtype", "short_name"]
