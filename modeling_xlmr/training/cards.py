"""Task results in a model card: `model-index` entries (fractions, one unit for every result) and a marked
results section, replaced on re-runs.

A card written by `xlmr convert` has an evaluation section between `model_cards.EVALUATION_START/END` (which
may say that no results are known); the first results added replace it. A card this function creates for a
fine-tuned model names its `base_model` and inherits the base model's license and languages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from model_cards import EVALUATION_END, EVALUATION_START

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
    base_model_dir: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """Add (or replace) `results` in the card's `model-index` and put `section` between `markers` in its text
    (where these markers already are, else in place of the card's evaluation section, else at the end).

    Results for other tasks, datasets, splits or metrics are kept. A missing card is created, naming the
    model in `base_model_dir` (a directory or Hub id) as its base.
    """
    if os.path.isfile(card_path):
        card = ModelCard.load(card_path)
    else:
        data = new_card_data(pipeline_tag, base_model_dir, tags)
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {model_name}\n")
    replaced = {result_key(result) for result in results}
    kept = [result for result in (card.data.eval_results or []) if result_key(result) not in replaced]
    card.data.eval_results = kept + list(results)
    card.data.model_name = card.data.model_name or model_name
    card.text = _with_section(card.text, section, [markers, (EVALUATION_START, EVALUATION_END)])
    write_text_atomically(card_path, str(card))
    return card


def new_card_data(pipeline_tag: str, base_model_dir: str | None, tags: Sequence[str] = ()) -> ModelCardData:
    """A fine-tuned model's card data: what it was fine-tuned from, under that model's license and languages."""
    data = ModelCardData(library_name="transformers", pipeline_tag=pipeline_tag, tags=["xlm-roberta", *tags])
    if base_model_dir is None:
        return data
    base_card = os.path.join(base_model_dir, "README.md")
    base = ModelCard.load(base_card, ignore_metadata_errors=True).data if os.path.isfile(base_card) else ModelCardData()
    data.base_model = _hub_id_or_name(base_model_dir, base)
    data.license = base.license or "mit"  # XLM-R's own license, when the base says nothing
    data.language = base.language
    return data


def _hub_id_or_name(path: str, base: ModelCardData) -> str:
    """A Hub id as given; for a local directory, the name its card gives the model, else the folder's name."""
    if not os.path.exists(path):
        return path
    return base.model_name or os.path.basename(os.path.normpath(path))


def _with_section(text: str, section: str, marker_pairs: Sequence[tuple[str, str]]) -> str:
    """`section` wrapped in the first marker pair, in place of the first marked block found, else appended."""
    begin, finish = marker_pairs[0]
    block = f"{begin}\n{section}\n{finish}"
    for start_marker, end_marker in marker_pairs:
        start, end = text.find(start_marker), text.find(end_marker)
        if start != -1 and end > start:
            return text[:start] + block + text[end + len(end_marker) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


__all__ = ["new_card_data", "result_key", "update_card_results"]
