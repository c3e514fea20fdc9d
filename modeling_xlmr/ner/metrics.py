"""Entity-level precision / recall / F1 per language with seqeval, and the paper's NER table.

Scores are seqeval's: conlleval's reading of IOB tags (its default mode) for IOB2 labels, and the strict IOBES
scheme when the labels have E-/S- tags. The table has one row per run, shaped like the XLM-R paper's NER
table (F1 × 100, CoNLL's language order en, nl, es, de first, then the others, then the average)::

    Model | en | nl | es | de | avg
    ---|---|---|---|---|---
    `xlmr-ner` _(CROSS-LINGUAL TRANSFER)_ | 92.9 | 80.6 | 80.1 | 72.9 | 81.6

Fractions are kept in JSON, `eval_results.json` and the model-index; percentages are shown in markdown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from model_cards import NER_TASK, ner_f1_result

from ..common.dependencies import require
from ..common.files import write_text_atomically
from ..training.cards import update_card_results
from .tags import scheme_of

CONLL_LANGUAGES = ("en", "nl", "es", "de")  # the paper's column order
CARD_TABLE_START = "<!-- xlmr-ner-results:start -->"
CARD_TABLE_END = "<!-- xlmr-ner-results:end -->"


def ordered_languages(languages) -> list[str]:
    present = set(languages)
    known = [language for language in CONLL_LANGUAGES if language in present]
    return known + sorted(present - set(known))


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str) -> dict:
    """seqeval's micro precision, recall and F1 over all entities, and the number of gold entities."""
    metrics = require("seqeval.metrics")
    options = {}
    if scheme == "IOBES":
        options = {"mode": "strict", "scheme": require("seqeval.scheme").IOBES}
    gold, predicted = [list(tags) for tags in gold], [list(tags) for tags in predicted]
    return {
        "precision": float(metrics.precision_score(gold, predicted, zero_division=0, **options)),
        "recall": float(metrics.recall_score(gold, predicted, zero_division=0, **options)),
        "f1": float(metrics.f1_score(gold, predicted, zero_division=0, **options)),
    }


@dataclass
class EntityTable:
    """Scores per language (fractions, in table order) and over all sentences, for one model and setting."""

    model: str
    scores: dict[str, dict[str, float]]  # language -> precision, recall, f1
    overall: dict[str, float]
    sentences: dict[str, int]
    scheme: str = "IOB2"
    setting: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_predictions(
        cls,
        gold: Sequence[Sequence[str]],
        predicted: Sequence[Sequence[str]],
        languages: Sequence[str],
        labels: Sequence[str],
        model: str,
        setting: str | None = None,
    ) -> EntityTable:
        if not len(gold) == len(predicted) == len(languages):
            raise ValueError(
                f"{len(predicted)} predicted sentences for {len(gold)} gold ones and {len(languages)} languages."
            )
        for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
            if len(gold_tags) != len(predicted_tags):
                raise ValueError(f"sentence {index}: {len(predicted_tags)} predicted tags for {len(gold_tags)} words.")
        scheme = scheme_of(labels)
        scores, sentences = {}, {}
        for language in ordered_languages(languages):
            rows = [index for index, value in enumerate(languages) if value == language]
            scores[language] = entity_scores([gold[i] for i in rows], [predicted[i] for i in rows], scheme)
            sentences[language] = len(rows)
        overall = entity_scores(gold, predicted, scheme)
        return cls(model, scores, overall, sentences, scheme, setting)

    @property
    def average(self) -> float:
        """Mean F1 of the languages (the paper's "avg" column)."""
        values = [score["f1"] for score in self.scores.values()]
        return sum(values) / len(values) if values else 0.0

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        """As Trainer reports them: `f1`, `precision`, `recall` (over all sentences), `f1_avg` (mean of the
        languages) and `<language>_f1` / `_precision` / `_recall`, with `prefix_` in front when given."""
        values = {**self.overall, "f1_avg": self.average}
        for language, score in self.scores.items():
            values.update({f"{language}_{name}": value for name, value in score.items()})
        if prefix:
            values = {f"{prefix}_{name}": value for name, value in values.items()}
            values[f"{prefix}_samples"] = sum(self.sentences.values())
        return values

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "setting": self.setting,
            "metric": "entity f1 (seqeval)",
            "scheme": self.scheme,
            "f1": {language: score["f1"] for language, score in self.scores.items()},
            "precision": {language: score["precision"] for language, score in self.scores.items()},
            "recall": {language: score["recall"] for language, score in self.scores.items()},
            "average": self.average,
            "overall": self.overall,
            "sentences": self.sentences,
            **self.extra,
        }

    def to_markdown(self) -> str:
        languages = list(self.scores)
        row_name = f"`{self.model}`" + (f" _({self.setting.upper()})_" if self.setting else "")
        cells = [f"{100 * self.scores[language]['f1']:.1f}" for language in languages] + [f"{100 * self.average:.1f}"]
        return "\n".join(
            [
                " | ".join(["Model", *languages, "avg"]),
                "|".join(["---"] * (len(languages) + 2)),
                " | ".join([row_name, *cells]),
            ]
        )


def write_results(table: EntityTable, json_path: str | None, markdown_path: str | None = None) -> None:
    if json_path:
        write_text_atomically(json_path, json.dumps(table.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if markdown_path:
        write_text_atomically(markdown_path, table.to_markdown() + "\n")


def update_model_card(
    card_path: str,
    table: EntityTable,
    dataset_type: str,
    dataset_name: str,
    dataset_split: str | None,
    base_model_dir: str | None = None,
):
    """Entity F1 per language (dataset config = language) and averaged, in the card's model-index and text."""

    def result(language: str | None, value: float, name: str):
        return ner_f1_result(round(value, 4), language, dataset_name, dataset_type, dataset_split, name)

    results = [result(language, score["f1"], f"F1 ({language})") for language, score in table.scores.items()]
    if len(table.scores) > 1:
        results.append(result(None, table.average, f"F1 (average of {len(table.scores)} languages)"))
    where = f"{dataset_name} {dataset_split}" if dataset_split else dataset_name
    section = f"## Results\n\nEntity F1 (%) on {where}, per language and averaged:\n\n{table.to_markdown()}"
    markers = (CARD_TABLE_START, CARD_TABLE_END)
    return update_card_results(
        card_path, results, section, markers, NER_TASK["task_type"], table.model, base_model_dir, tags=("ner",)
    )


__all__ = ["EntityTable", "entity_scores", "ordered_languages", "update_model_card", "write_results"]
