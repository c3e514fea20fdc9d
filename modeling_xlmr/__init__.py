"""XLM-RoBERTa for Hugging Face Transformers: config, models, tokenizer and the fairseq-style interface.

Names are imported lazily so that `import modeling_xlmr` stays cheap and a CLI sub-command only pays
for what it uses.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "XLMRConfig": "configuration_xlmr",
    "XLMRPreTrainedModel": "modeling_xlmr",
    "XLMRModel": "modeling_xlmr",
    "XLMRForMaskedLM": "modeling_xlmr",
    "XLMRForSequenceClassification": "modeling_xlmr",
    "XLMRForTokenClassification": "modeling_xlmr",
    "XLMRForQuestionAnswering": "modeling_xlmr",
    "XLMRForMultipleChoice": "modeling_xlmr",
    "XLMRTokenizerFast": "tokenization_xlmr",
    "XLMRHubInterface": "hub_interface",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .configuration_xlmr import XLMRConfig
    from .hub_interface import XLMRHubInterface
    from .modeling_xlmr import (
        XLMRForMaskedLM,
        XLMRForMultipleChoice,
        XLMRForQuestionAnswering,
        XLMRForSequenceClassification,
        XLMRForTokenClassification,
        XLMRModel,
        XLMRPreTrainedModel,
    )
    from .tokenization_xlmr import XLMRTokenizerFast


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling_xlmr' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
