"""What every task's `evaluate` reports where: the setting in the paper's terms, the results files and the card."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def infer_setting(train_languages: Sequence[str], eval_languages: Sequence[str]) -> str | None:
    """'cross-lingual transfer' (one training language, tested on more), 'translate-train-all' (tested only on
    training languages), else None."""
    train, test = set(train_languages), set(eval_languages)
    if len(test) < 2:
        return None
    if len(train) == 1 and train < test:
        return "cross-lingual transfer"
    if test <= train:
        return "translate-train-all"
    return None


def check_card_target(args: argparse.Namespace) -> None:
    """`--update-model-card` writes the model's own README.md, so the model must be a local directory."""
    if args.update_model_card and not os.path.isdir(args.model):
        raise ValueError(f"--update-model-card needs a local model directory; {args.model} is not one.")


def evaluation_targets(args: argparse.Namespace, stem: str) -> tuple[str | None, str | None, str | None]:
    """(results JSON, results Markdown, model card) of an evaluation: --results-json / --results-markdown, else
    OUT/<stem>.json and .md under --output-dir; the model's README.md with --update-model-card."""
    results = os.path.join(args.output_dir, stem) if args.output_dir else None
    json_path = args.results_json or (results and f"{results}.json")
    markdown_path = args.results_markdown or (results and f"{results}.md")
    card = os.path.join(args.model, "README.md") if args.update_model_card else None
    return json_path, markdown_path, card


__all__ = ["check_card_target", "evaluation_targets", "infer_setting"]
