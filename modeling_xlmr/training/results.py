"""Naming a run's setting in the paper's terms from the languages it trained and tested on."""

from __future__ import annotations

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


__all__ = ["infer_setting"]
