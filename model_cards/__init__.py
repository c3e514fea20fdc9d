"""Model cards for converted XLM-R repositories.

`template.md` is one Jinja template (rendered by `huggingface_hub.ModelCard.from_template`); the
per-model facts live in `xlmr.base.v0.yaml`, `xlmr.large.v0.yaml` and `converted.yaml` (any other
size), and the 100 pre-training languages in `languages.yaml`. `render_model_card` picks the
variant from the config's sizes and fills in what the conversion knows (parameter count, dtype,
heads and labels, the source file's sha256).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

VARIANTS = ("xlmr.base.v0", "xlmr.large.v0")
FALLBACK_VARIANT = "converted"
TAGS = ["xlm-roberta", "xlmr", "fairseq", "multilingual", "masked-lm", "safetensors"]
DEFAULT_REPO_ID = "path/to/this/repository"


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def languages() -> list[dict[str, str]]:
    """XLM-R's 100 pre-training languages: [{"code": BCP-47 tag, "name": English name}, ...]."""
    return yaml.safe_load(_read("languages.yaml"))


def load_variant(name: str) -> dict[str, Any]:
    return yaml.safe_load(_read(f"{name}.yaml"))


def variant_for(config: Mapping[str, Any]) -> dict[str, Any]:
    """The released model whose sizes `config` has (base or large), else the generic card."""
    for name in VARIANTS:
        variant = load_variant(name)
        if all(config.get(key) == value for key, value in variant["sizes"].items()):
            return variant
    return load_variant(FALLBACK_VARIANT)


NLI_TASK = {"task_type": "text-classification", "task_name": "Natural Language Inference"}
# Every model-index accuracy is a fraction (0.887), never a percentage: cards written here and results
# added later by `xlmr evaluate --update-model-card` share one list, so they share one unit.
# The section of a card that results replace when they are added (`xlmr evaluate --update-model-card`).
EVALUATION_START = "<!-- xlmr-evaluation:start -->"
EVALUATION_END = "<!-- xlmr-evaluation:end -->"
SEED_SOURCE = {
    "source_name": "fairseq XLM-R README",
    "source_url": "https://github.com/facebookresearch/fairseq/tree/main/examples/xlmr",
}


def nli_accuracy_result(
    accuracy: float,
    language: str | None,
    dataset_name: str = "XNLI",
    dataset_type: str = "xnli",
    split: str | None = "test",
    metric_name: str | None = None,
    **source: str,
) -> EvalResult:
    """One model-index entry: NLI accuracy on one language (dataset config) of an XNLI-like dataset,
    or on all of them (`language` None)."""
    return EvalResult(
        **NLI_TASK,
        dataset_type=dataset_type,
        dataset_name=dataset_name,
        dataset_config=language,
        dataset_split=split,
        metric_type="accuracy",
        metric_value=accuracy,
        metric_name=metric_name,
        **source,
    )


NER_TASK = {"task_type": "token-classification", "task_name": "Named Entity Recognition"}


def ner_f1_result(
    f1: float,
    language: str | None,
    dataset_name: str,
    dataset_type: str,
    split: str | None = "test",
    metric_name: str | None = None,
) -> EvalResult:
    """One model-index entry: entity-level F1 on one language (dataset config) of an NER dataset, or on all
    of them (`language` None)."""
    return EvalResult(
        **NER_TASK,
        dataset_type=dataset_type,
        dataset_name=dataset_name,
        dataset_config=language,
        dataset_split=split,
        metric_type="f1",
        metric_value=f1,
        metric_name=metric_name,
    )


def card_data(variant: Mapping[str, Any], model_name: str, pipeline_tag: str) -> ModelCardData:
    """YAML metadata: languages, license, data set, tags, pipeline, library and the XNLI model-index."""
    eval_results = None
    if variant.get("xnli"):
        setting = variant["xnli"]["setting"]
        eval_results = [
            nli_accuracy_result(
                round(accuracy / 100, 4), language, dataset_name=f"XNLI ({language}, {setting})", **SEED_SOURCE
            )
            for language, accuracy in variant["xnli"]["accuracy"].items()
        ]
    return ModelCardData(
        language=[entry["code"] for entry in languages()],
        license="mit",
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        datasets=["cc100"],
        tags=list(TAGS),
        model_name=model_name,
        eval_results=eval_results,
    )


def render_model_card(
    *,
    config: Mapping[str, Any],
    parameter_count: int,
    source_name: str,
    source_sha256: str,
    max_abs_difference: float = 0.0,
    repo_id: str | None = None,
) -> str:
    """The README.md of a converted repo whose config.json is `config` (a dict)."""
    variant = variant_for(config)
    head = config.get("fairseq_head_name")
    heads = config.get("fairseq_classification_heads") or {}
    model_name = repo_id.split("/")[-1] if repo_id else variant["name"]
    card = ModelCard.from_template(
        card_data(variant, model_name, "text-classification" if head else "fill-mask"),
        template_str=_read("template.md"),
        variant=variant,
        config=config,
        parameter_count=parameter_count,
        dtype=config.get("dtype") or "float32",
        head=head,
        heads=heads,
        max_tokens=config["max_position_embeddings"] - config.get("pad_token_id", 1) - 1,
        source_name=source_name,
        source_sha256=source_sha256,
        max_abs_difference=max_abs_difference,
        language_names=[entry["name"] for entry in languages()],
        repo_id=repo_id or DEFAULT_REPO_ID,
        evaluation_start=EVALUATION_START,
        evaluation_end=EVALUATION_END,
    )
    return str(card)


__all__ = [
    "EVALUATION_END",
    "EVALUATION_START",
    "languages",
    "ner_f1_result",
    "nli_accuracy_result",
    "render_model_card",
    "variant_for",
]
