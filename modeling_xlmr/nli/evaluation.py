"""Per-language accuracy: the seed README's XNLI table as markdown and JSON, and model-card results.

The table has one row per run, shaped like the seed's::

    Model | en | fr | ... | avg
    ---|---|---|---|---
    `xlmr-xnli` _(TRANSLATE-TRAIN-ALL)_ | 88.7 | 85.2 | ... | 83.0

Accuracies are kept as fractions (JSON, model-index) and shown as percentages (markdown). The
average is the unweighted mean over languages, as in the paper's "avg" column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from huggingface_hub import EvalResult, ModelCard

from model_cards import NLI_TASK, nli_accuracy_result

from ..common.files import write_text_atomically
from ..training.cards import update_card_results
from ..training.results import infer_setting
from .data import ordered_languages

CARD_TABLE_START = "<!-- xlmr-nli-results:start -->"
CARD_TABLE_END = "<!-- xlmr-nli-results:end -->"


@dataclass
class AccuracyTable:
    """Accuracy per language (fractions, in table order) for one model and setting."""

    model: str
    accuracy: dict[str, float]
    examples: dict[str, int]
    setting: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_predictions(
        cls,
        predicted: Sequence[int],
        gold: Sequence[int],
        languages: Sequence[str],
        model: str,
        setting: str | None = None,
    ) -> AccuracyTable:
        predicted, gold, languages = np.asarray(predicted), np.asarray(gold), np.asarray(languages)
        if not len(predicted) == len(gold) == len(languages):
            raise ValueError(
                f"{len(predicted)} predictions for {len(gold)} labels and {len(languages)} languages; "
                "they must line up one to one."
            )
        accuracy, examples = {}, {}
        for language in ordered_languages(languages.tolist()):
            rows = languages == language
            accuracy[language] = float((predicted[rows] == gold[rows]).mean())
            examples[language] = int(rows.sum())
        return cls(model=model, accuracy=accuracy, examples=examples, setting=setting)

    @property
    def average(self) -> float:
        return float(np.mean(list(self.accuracy.values())))

    @property
    def overall(self) -> float:
        """Accuracy over every example (languages weighted by their size, unlike `average`)."""
        total = sum(self.examples.values())
        return sum(self.accuracy[lang] * self.examples[lang] for lang in self.accuracy) / total if total else 0.0

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        """The numbers as Trainer reports them: `accuracy` (over all examples), `accuracy_avg` (mean of the
        languages) and `accuracy_<language>`, with `prefix_` in front (`eval_accuracy`, ...) when given."""
        values = {"accuracy": self.overall, "accuracy_avg": self.average}
        values.update({f"accuracy_{language}": value for language, value in self.accuracy.items()})
        if prefix:
            values = {f"{prefix}_{name}": value for name, value in values.items()}
            values[f"{prefix}_samples"] = sum(self.examples.values())
        return values

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "setting": self.setting,
            "metric": "accuracy",
            "accuracy": self.accuracy,
            "average": self.average,
            "examples": self.examples,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AccuracyTable:
        known = {"model", "setting", "metric", "accuracy", "average", "examples"}
        return cls(
            model=data["model"],
            accuracy=dict(data["accuracy"]),
            examples=dict(data["examples"]),
            setting=data.get("setting"),
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_markdown(self) -> str:
        languages = list(self.accuracy)
        row_name = f"`{self.model}`" + (f" _({self.setting.upper()})_" if self.setting else "")
        cells = [f"{100 * self.accuracy[lang]:.1f}" for lang in languages] + [f"{100 * self.average:.1f}"]
        return "\n".join(
            [
                " | ".join(["Model", *languages, "avg"]),
                "|".join(["---"] * (len(languages) + 2)),
                " | ".join([row_name, *cells]),
            ]
        )


def write_results(table: AccuracyTable, json_path: str | None, markdown_path: str | None = None) -> None:
    if json_path:
        write_text_atomically(json_path, json.dumps(table.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if markdown_path:
        write_text_atomically(markdown_path, table.to_markdown() + "\n")


def read_results(json_path: str) -> AccuracyTable:
    with open(json_path, encoding="utf-8") as stream:
        return AccuracyTable.from_dict(json.load(stream))


def eval_results_for_card(
    table: AccuracyTable, dataset_type: str, dataset_name: str, dataset_split: str | None
) -> list[EvalResult]:
    """One model-index result per language (dataset config = language) plus the average."""

    def result(config: str | None, value: float, metric_name: str) -> EvalResult:
        return nli_accuracy_result(round(value, 4), config, dataset_name, dataset_type, dataset_split, metric_name)

    results = [result(lang, value, f"Accuracy ({lang})") for lang, value in table.accuracy.items()]
    if len(table.accuracy) > 1:
        results.append(result(None, table.average, f"Accuracy (average of {len(table.accuracy)} languages)"))
    return results


def update_model_card(
    card_path: str,
    table: AccuracyTable,
    dataset_type: str = "xnli",
    dataset_name: str = "XNLI",
    dataset_split: str | None = "test",
    base_model_dir: str | None = None,
) -> ModelCard:
    """Add (or replace) this table's results in a card's `model-index` and rewrite its evaluation section.

    Results for other datasets, splits or metrics are kept (all as fractions). A missing card is created,
    naming `base_model_dir`'s model as `base_model` and inheriting its license and languages.
    """
    where = f"{dataset_name} {dataset_split}" if dataset_split else dataset_name
    section = (
        f"## Evaluation\n\nAccuracy (%) on {where}, per language and averaged (the `model-index` holds them as "
        f"fractions):\n\n{table.to_markdown()}"
    )
    results = eval_results_for_card(table, dataset_type, dataset_name, dataset_split)
    markers = (CARD_TABLE_START, CARD_TABLE_END)
    return update_card_results(
        card_path, results, section, markers, NLI_TASK["task_type"], table.model, base_model_dir, tags=("xnli",)
    )


__all__ = [
    "AccuracyTable",
    "eval_results_for_card",
    "infer_setting",
    "read_results",
    "update_model_card",
    "write_results",
]
