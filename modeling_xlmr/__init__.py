"""XLM-RoBERTa for Hugging Face Transformers: config, models, tokenizer and the fairseq-style interface.

The modules in this folder are the model code `trust_remote_code=True` runs: they are saved beside
every model and tokenizer (`configuration_xlmr.copy_remote_code`) and import only each other. The
tools built on them live in the sub-packages, each importing only the layers below it:

    hub/        fairseq's interface, loading a repo, classification-head files, word alignment
    inference/  the batch engine: tokenize -> windows -> token-budget batches -> packed forward -> pool
    nli/        XNLI-style data, fine-tuning and evaluation
    ray_data/   Ray Data: the predictor on an actor pool, `xlmr extract --engine ray` (the `ray` extra)
    cli/        the `xlmr` command, one module per sub-command
    common/     what the tools share: dtype names, atomic file writes, optional dependencies

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
    "XLMRHubInterface": "hub.interface",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .configuration_xlmr import XLMRConfig
    from .hub.interface import XLMRHubInterface
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
