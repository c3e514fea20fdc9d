"""A transformers XLM-R repo (multilingual-e5, bge-m3, paraphrase-multilingual, rerankers) -> a repo of this
package: the same weights and files, plus this package's code and an `auto_map` that points to it.

`adopt_transformers_repo(source, output)` copies every file of the source untouched (weights, tokenizer,
sentence-transformers modules, extra heads such as bge-m3's `colbert_linear.pt`), except what it rewrites:
`config.json` (the same values, plus `auto_map`, and `add_pooling_layer` saying whether the weights hold a
pooler) and `README.md` (the source's metadata kept, `base_model` naming it). A `pytorch_model.bin` without
safetensors beside it is re-saved as `model.safetensors`, keys unchanged. Sentence-transformers files can be
created from options when the source has none. The written repo is loaded with this package's classes and
compared with stock transformers on the source before it is moved into place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData

from modeling_xlmr.common.files import apply_umask, check_output_directory, install_directory, staging_directory
from modeling_xlmr.configuration_xlmr import AUTO_MAP, XLMRConfig, copy_remote_code, remote_code_files
from modeling_xlmr.hub.sentence_settings import (
    SENTENCE_TRANSFORMERS_NAMES,
    SentenceSettings,
    has_sentence_transformers_files,
    write_sentence_transformers_files,
)

from .verification import VERIFICATION_SENTENCES, max_abs_difference

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
BIN_WEIGHTS = "pytorch_model.bin"
SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
POOLER_PREFIXES = ("pooler.", "roberta.pooler.")


class AdoptionError(ValueError):
    """The source cannot be adopted; the message names the problem and the fix."""


@dataclass
class AdoptionResult:
    output: Path
    max_abs_difference: float
    sentence_transformers: bool


def is_transformers_repo(source: str | Path) -> bool:
    """A directory holding a transformers `config.json` (as opposed to fairseq's model.pt + dict.txt)."""
    return Path(source).is_dir() and (Path(source) / CONFIG_FILE).is_file()


def adopt_transformers_repo(
    source: str | Path,
    output: str | Path,
    *,
    sentence_settings: SentenceSettings | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    force: bool = False,
    tolerance: float = 1e-4,
    log: Callable[[str], None] = lambda message: None,
) -> AdoptionResult:
    """Make the transformers XLM-R repo `source` a repo of this package at `output` (see the module's doc).

    `sentence_settings` writes sentence-transformers files (pooling, normalisation, prompts), replacing the
    source's if it has any. `base_model` is the Hub id the card names (default: the source's `_name_or_path`
    when it is one, else the folder's name).
    """
    source, output = Path(source), Path(output)
    config = _read_config(source)
    ours = _output_names(source).__contains__
    check_output_directory(output, [source], overwrite, force, ours)
    built = staging_directory(output, "partial")
    try:
        log(f"copying {source} (every file but config.json and README.md, untouched)")
        _copy_source_files(source, built)
        config.add_pooling_layer = _has_pooler(built)
        config.auto_map = dict(AUTO_MAP)  # this package's classes replace whatever the source pointed to
        config.save_pretrained(built)
        copy_remote_code(built)
        if sentence_settings is not None:
            log(
                f"writing sentence-transformers files: {sentence_settings.pooling} pooling, normalize={sentence_settings.normalize}"
            )
            write_sentence_transformers_files(built, sentence_settings, config.hidden_size)
        _write_card(source, built, base_model or _source_id(source, config))
        log("verifying: this package's classes on the new repo against stock transformers on the source")
        difference = _verify(source, built)
        log(f"max abs difference vs stock transformers on the source: {difference:.2e}")
        if not difference <= tolerance:
            raise AdoptionError(
                f"verification failed: max abs difference {difference:.3g} exceeds {tolerance:g}; the adopted repo "
                "does not reproduce the source."
            )
        apply_umask(built)
        check_output_directory(output, [source], overwrite, force, ours)
        install_directory(built, output, ours)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    log(f"wrote {output}")
    return AdoptionResult(output, difference, has_sentence_transformers_files(output))


def _output_names(source: Path) -> set[str]:
    """Every top-level name an adoption of `source` may write: what --overwrite may replace."""
    names = {path.name for path in source.iterdir() if not path.name.startswith(".")}
    return (
        names
        | set(remote_code_files())
        | set(SENTENCE_TRANSFORMERS_NAMES)
        | {CONFIG_FILE, CARD_FILE, "model.safetensors"}
    )


def _read_config(source: Path) -> XLMRConfig:
    raw = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    if raw.get("model_type") != "xlm-roberta":
        raise AdoptionError(
            f"{source} holds a {raw.get('model_type')!r} model; only XLM-R repos (model_type 'xlm-roberta') can be adopted."
        )
    return XLMRConfig.from_pretrained(source)


def _copy_source_files(source: Path, built: Path) -> None:
    has_safetensors = any((source / name).is_file() for name in SAFETENSORS_WEIGHTS)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # hidden: .git/, .cache/huggingface/ left by downloads
        if relative.as_posix() in (CONFIG_FILE, CARD_FILE):
            continue
        if relative.as_posix() == BIN_WEIGHTS and not has_safetensors:
            _save_bin_as_safetensors(path, built)
            continue
        (built / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, built / relative)


def _save_bin_as_safetensors(path: Path, built: Path) -> None:
    from safetensors.torch import save_file

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle asking for code, or a damaged file
        raise AdoptionError(f"cannot read {path} safely ({' '.join(str(error).split())[:160]}).") from error
    # Tied tensors share storage; safetensors stores each key on its own.
    save_file(
        {key: tensor.contiguous().clone() for key, tensor in state.items()},
        str(built / "model.safetensors"),
        metadata={"format": "pt"},
    )


def _weight_names(directory: Path) -> list[str]:
    from safetensors import safe_open

    names = []
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            names += list(handle.keys())
    return names


def _has_pooler(directory: Path) -> bool:
    return any(name.startswith(POOLER_PREFIXES) for name in _weight_names(directory))


def _source_id(source: Path, config: XLMRConfig) -> str:
    name = getattr(config, "_name_or_path", "") or ""
    return name if name.count("/") == 1 and not Path(name).exists() else source.resolve().name


def _write_card(source: Path, built: Path, base_model: str) -> None:
    if (source / CARD_FILE).is_file():
        original = ModelCard.load(source / CARD_FILE, ignore_metadata_errors=True)
        data, body = original.data, original.text.strip()
    else:
        data, body = ModelCardData(), ""
    data.base_model = base_model
    data.library_name = data.library_name or "transformers"
    data.tags = sorted(set(data.tags or []) | {"xlm-roberta", "xlmr"})
    card = ModelCard(
        f"---\n{data.to_yaml()}\n---\n\n# {base_model}, with xlmr's fast path\n\n"
        f"The weights and files of [`{base_model}`](https://huggingface.co/{base_model}), unchanged, plus the `xlmr` "
        "package's code (`auto_map`): with `trust_remote_code=True`, `AutoModel`, `SentenceTransformer` and "
        "`CrossEncoder` run its packed inference path; without it, stock transformers and sentence-transformers "
        "load the same files as before.\n" + (f"\n## Original model card\n\n{body}\n" if body else "")
    )
    (built / CARD_FILE).write_text(str(card), encoding="utf-8")


def _verify(source: Path, built: Path) -> float:
    """Max abs difference (over real tokens) between stock transformers on the source and this package's
    classes on the built repo, for the class the source's architecture names; NaN or inf counts as inf."""
    import transformers

    from modeling_xlmr.hub.loading import load_tokenizer
    from modeling_xlmr.modeling_xlmr import XLMRForMaskedLM, XLMRForSequenceClassification, XLMRModel

    config = XLMRConfig.from_pretrained(built)
    architecture = (config.architectures or ["XLMRobertaModel"])[0]
    if architecture.endswith("ForSequenceClassification"):
        stock_class, our_class, output = (
            transformers.XLMRobertaForSequenceClassification,
            XLMRForSequenceClassification,
            "logits",
        )
    elif architecture.endswith("ForMaskedLM"):
        stock_class, our_class, output = transformers.XLMRobertaForMaskedLM, XLMRForMaskedLM, "logits"
    else:
        stock_class, our_class, output = transformers.XLMRobertaModel, XLMRModel, "last_hidden_state"
    tokenizer = load_tokenizer(str(source))
    batch = tokenizer(list(VERIFICATION_SENTENCES), padding=True, truncation=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with _quiet(), torch.no_grad():
        stock = stock_class.from_pretrained(source, dtype=torch.float32).eval()
        expected = getattr(stock(**inputs), output)
        del stock
        ours = our_class.from_pretrained(built, dtype=torch.float32).eval()
        actual = getattr(ours(**inputs), output)
    mask = inputs["attention_mask"] if output != "logits" or architecture.endswith("ForMaskedLM") else None
    return max_abs_difference(actual, expected, mask)


def _quiet():
    from .verification import _quiet_transformers

    return _quiet_transformers()


__all__ = ["AdoptionError", "AdoptionResult", "adopt_transformers_repo", "is_transformers_repo"]
