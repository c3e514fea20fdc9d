"""fairseq's interface on the Transformers model: loading a repo, its classification-head file, word alignment."""

from .alignment import WordFeatures
from .interface import XLMRHubInterface

__all__ = ["WordFeatures", "XLMRHubInterface"]
