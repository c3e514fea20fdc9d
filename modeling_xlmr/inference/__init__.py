"""Batch inference: planning (`batching`), the engine that runs it (`engine`), inputs and outputs (`records`),
streaming sharded extraction (`sources`, `shards`, `streaming`).

`InferenceEngine` is imported lazily, so that the readers and the shard writer (which Ray's read and
write tasks import in fresh processes) do not pay for torch and transformers.
"""

from typing import TYPE_CHECKING

__all__ = ["InferenceEngine"]

if TYPE_CHECKING:
    from .engine import InferenceEngine


def __getattr__(name: str):
    if name == "InferenceEngine":
        from .engine import InferenceEngine

        return InferenceEngine
    raise AttributeError(f"module 'modeling_xlmr.inference' has no attribute {name!r}")
