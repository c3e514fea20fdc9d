"""An XLM-R repo -> ONNX (fp32, optionally dynamically quantized to int8), verified against PyTorch.

`export_onnx(repo, output)` exports what the repo is for: a sequence classifier's logits, else the encoder's
`last_hidden_state`, with dynamic batch and sequence axes (`torch.onnx.export(dynamo=True)`; the model takes
its padded path while exporting). OUT receives `model.onnx` (and `model_quantized.onnx` with `quantize="int8"`,
onnxruntime's dynamic int8 quantisation, per channel), the tokenizer files and `config.json`. Each graph is run
in onnxruntime on a padded multilingual batch of another shape than the one exported, and compared with the
PyTorch model before OUT is written: fp32 within `tolerance` (max abs difference), int8 by the mean cosine of
its outputs. Like `convert`, everything is built beside OUT and moved into place at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from modeling_xlmr.common.dependencies import require
from modeling_xlmr.common.files import apply_umask, check_output_directory, install_directory, staging_directory

from .verification import VERIFICATION_SENTENCES, max_abs_difference

MODEL_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("last_hidden_state", "logits")
# What OUT may hold from an export (besides this package's tokenizer code): what --overwrite may replace.
EXPORT_FILES = (
    MODEL_FILE,
    QUANTIZED_FILE,
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
)


@dataclass
class ExportResult:
    output: Path
    output_name: str
    max_abs_difference: float
    int8_mean_cosine: float | None = None
    files: list[str] = field(default_factory=list)


class _Exported(nn.Module):
    """The tensor the export returns: a classifier's logits, else the encoder's last hidden state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.classifies = hasattr(model, "classifier") and "ForSequenceClassification" in "".join(
            model.config.architectures or []
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.classifies:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(
    repo: str,
    output: str | Path,
    *,
    quantize: str | None = None,
    overwrite: bool = False,
    tolerance: float = 1e-4,
    int8_min_cosine: float = 0.98,
    trust_remote_code: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> ExportResult:
    """Export `repo` (a directory or Hub id) to ONNX in `output`; see the module's doc."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module)
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r} is not supported; use 'int8' (or nothing for fp32 only).")
    from modeling_xlmr.hub.loading import load_repo

    output = Path(output)
    sources = [Path(repo)] if Path(repo).exists() else []
    check_output_directory(output, sources, overwrite, False, _is_export_output)
    loaded = load_repo(repo, dtype=torch.float32, trust_remote_code=trust_remote_code)
    exported = _Exported(loaded.model.eval())
    output_name = OUTPUT_NAMES[1] if exported.classifies else OUTPUT_NAMES[0]
    built = staging_directory(output, "partial")
    try:
        log(f"exporting {output_name} of {repo} to ONNX (dynamic batch and sequence axes)")
        example = loaded.tokenizer(["Hello world!", "Bonjour le monde !"], padding=True, return_tensors="pt")
        axes = {0: "batch", 1: "sequence"}
        with torch.no_grad(), _quiet_exporters():
            torch.onnx.export(
                exported,
                (example["input_ids"], example["attention_mask"]),
                str(built / MODEL_FILE),
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[output_name],
                dynamic_shapes=(axes, axes),
                external_data=False,
                verbose=False,
            )
        inputs, expected = _reference(exported, loaded.tokenizer)
        difference = max_abs_difference(_run(built / MODEL_FILE, inputs), expected, _token_mask(inputs, exported))
        log(f"onnxruntime vs PyTorch: max abs difference {difference:.2e}")
        if not difference <= tolerance:
            raise ValueError(
                f"verification failed: the ONNX graph differs from PyTorch by {difference:.3g} (> {tolerance:g})."
            )
        result = ExportResult(output, output_name, difference)
        if quantize == "int8":
            result.int8_mean_cosine = _quantize(
                built, inputs, expected, _token_mask(inputs, exported), int8_min_cosine, log
            )
        loaded.tokenizer.save_pretrained(str(built))
        # The graph needs none of this package's code: a plain config, as ONNX runtimes' loaders expect.
        config = {key: value for key, value in loaded.model.config.to_dict().items() if key != "auto_map"}
        (built / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        result.files = sorted(path.name for path in built.iterdir())
        apply_umask(built)
        check_output_directory(output, sources, overwrite, False, _is_export_output)
        install_directory(built, output, _is_export_output)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    log(f"wrote {output}")
    return result


@contextlib.contextmanager
def _quiet_exporters():
    """The exporter and the quantizer log progress and advice on every run; a command prints its own."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx"), logging.getLogger("torch")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _is_export_output(name: str) -> bool:
    from modeling_xlmr.configuration_xlmr import remote_code_files

    return name in EXPORT_FILES or name in remote_code_files()


def _reference(exported: _Exported, tokenizer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A padded batch of another size than the exported example, and PyTorch's output on it."""
    batch = tokenizer(list(VERIFICATION_SENTENCES), padding=True, return_tensors="pt")
    inputs = {name: batch[name] for name in INPUT_NAMES}
    with torch.no_grad():
        return inputs, exported(**inputs)


def _token_mask(inputs: dict[str, torch.Tensor], exported: _Exported) -> torch.Tensor | None:
    return None if exported.classifies else inputs["attention_mask"]


def _run(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    return torch.from_numpy(outputs)


def _quantize(built: Path, inputs, expected: torch.Tensor, mask, min_cosine: float, log) -> float:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log("quantizing to int8 (onnxruntime dynamic quantization, per channel)")
    with _quiet_exporters():
        quantize_dynamic(
            str(built / MODEL_FILE), str(built / QUANTIZED_FILE), weight_type=QuantType.QInt8, per_channel=True
        )
    quantized = _run(built / QUANTIZED_FILE, inputs)
    if not torch.isfinite(quantized).all():
        raise ValueError("verification failed: the int8 graph produces NaN or infinite values.")
    rows, reference = (quantized[mask.bool()], expected[mask.bool()]) if mask is not None else (quantized, expected)
    cosine = float(torch.nn.functional.cosine_similarity(rows.double(), reference.double(), dim=-1).mean())
    log(f"int8 vs fp32 PyTorch: mean cosine {cosine:.5f}")
    if not cosine >= min_cosine:
        raise ValueError(
            f"verification failed: the int8 graph's outputs have mean cosine {cosine:.4f} (< {min_cosine})."
        )
    return cosine


__all__ = ["ExportResult", "export_onnx"]
