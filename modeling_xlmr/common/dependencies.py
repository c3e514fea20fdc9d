"""Optional dependencies: imported where needed, with the install command in the error when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (what needs it, the extra that installs it)
OPTIONAL = {
    "datasets": ("fine-tuning and evaluation (xlmr finetune / xlmr evaluate)", "finetune"),
    "onnx": ("ONNX export (xlmr export-onnx)", "onnx"),
    "onnxscript": ("ONNX export (xlmr export-onnx)", "onnx"),
    "onnxruntime": ("ONNX export (xlmr export-onnx)", "onnx"),
    "ray": ("Ray Data inference (xlmr extract --engine ray, modeling_xlmr.ray_data)", "ray"),
    "seqeval": ("NER scores (xlmr finetune / xlmr evaluate --task ner)", "ner"),
    "peft": ("LoRA fine-tuning (xlmr finetune --lora)", "lora"),
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message is the one line a user needs."""


def require(module: str) -> ModuleType:
    """`import module`, or a `MissingDependencyError` naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise  # the package is there but broken: keep the real error
        purpose, extra = OPTIONAL[module.split(".")[0]]
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module!r}: pip install 'xlmr[{extra}]' "
            f"(from a source checkout: pip install -e '.[{extra}]')."
        ) from error


__all__ = ["MissingDependencyError", "OPTIONAL", "require"]
