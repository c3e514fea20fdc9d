"""Task results in a model card: `model-index` entries and a marked results section, replaced on re-runs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..common.files import write_text_atomically


def result_key(result: EvalResult) -> tuple:
    """What makes two results the same entry: task, dataset, config, split and metric."""
    return (
        result.task_type,
        result.dataset_type,
        result.dataset_config,
        result.dataset_split,
        result.metric_type,
        result.metric_name,
    )


def update_card_results(
    card_path: str,
    results: Sequence[EvalResult],
    section: str,
    markers: tuple[str, str],
    pipeline_tag: str,
    model_name: str,
) -> ModelCard:
    """Add (or replace) `results` in the card's `model-index` and put `section` between `markers` in its text.

    Results for other tasks, datasets, splits or metrics are kept; a missing card is created minimal.
    """
    if os.path.isfile(card_path):
        card = ModelCard.load(card_path)
    else:
        data = ModelCardData(library_name="transformers", pipeline_tag=pipeline_tag)
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {model_name}\n")
    replaced = {result_key(result) for result in results}
    kept = [result for result in (card.data.eval_results or []) if result_key(result) not in replaced]
    card.data.eval_results = kept + list(results)
    card.data.model_name = card.data.model_name or model_name
    card.text = _with_section(card.text, section, markers)
    write_text_atomically(card_path, str(card))
    return card


def _with_section(text: str, section: str, markers: tuple[str, str]) -> str:
    begin, finish = markers
    block = f"{begin}\n{section}\n{finish}"
    start, end = text.find(begin), text.find(finish)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(finish) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


__all__ = ["result_key", "update_card_results"]
