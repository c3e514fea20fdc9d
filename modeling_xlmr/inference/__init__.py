"""Batch inference: planning (`batching`), the engine that runs it (`engine`), inputs and outputs (`records`)."""

from .engine import InferenceEngine

__all__ = ["InferenceEngine"]
