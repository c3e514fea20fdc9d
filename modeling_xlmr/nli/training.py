"""XNLI-style sentence-pair classification with Transformers' `Trainer`: fine-tuning and evaluation.

`finetune(options)` and `evaluate(options)` take the options of `xlmr finetune` / `xlmr evaluate`
(attribute names as the flags, see `modeling_xlmr.cli.finetune`). Both run unchanged on one process or
under `accelerate launch` (DDP): `Trainer` shards the data, and only the main process writes files.
Everything about the data (files, columns, labels, languages) is checked before the model is loaded.

Results are written the way transformers' example scripts write them (`eval_results.json` and
`all_results.json` with `eval_accuracy`, `eval_accuracy_avg` and `eval_accuracy_<language>`), plus the
per-language table (`nli_accuracy.json` / `.md`) and, optionally, the model card's `model-index`.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from datasets.utils.logging import disable_progress_bar
from transformers import DataCollatorWithPadding, Trainer, set_seed

from ..modeling_xlmr import XLMRForSequenceClassification
from ..training.results import check_card_target, evaluation_targets
from ..training.trainer import (
    check_output_dir,
    check_training_options,
    evaluation_arguments,
    load_checked_config,
    load_tokenizer,
    name_of,
    resolve_checkpoint,
    save_final_model,
    training_arguments,
)
from .data import (
    XNLI_LABELS,
    ColumnNames,
    is_placeholder_labels,
    load_nli_data,
    tokenize_pairs,
)
from .evaluation import AccuracyTable, infer_setting, update_model_card, write_results

RESULTS_STEM = "nli_accuracy"  # OUT/nli_accuracy.json and OUT/nli_accuracy.md


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------


def finetune(args: argparse.Namespace) -> int:
    _check_options(args)
    checkpoint = resolve_checkpoint(args)
    check_output_dir(args, resuming=checkpoint is not None)
    training_args = training_arguments(args)
    config, id2label = _load_config(args)

    with training_args.main_process_first(desc="reading the data"):
        train_data = _load_data(args, args.train_file, id2label, args.train_languages)
        eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages) if args.eval_file else None
        tokenizer = load_tokenizer(args)
        train_set = tokenize_pairs(train_data, tokenizer, args.max_length)
        eval_set = tokenize_pairs(eval_data, tokenizer, args.max_length) if eval_data is not None else None

    set_seed(args.seed)  # the classification head is initialized here, before Trainer seeds anything
    model = _load_model(args, config, id2label)
    trainer = _trainer(model, training_args, tokenizer, train_set, eval_set)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    save_final_model(trainer, args.output_dir)
    trainer.save_metrics("train", train_result.metrics)  # train_results.json, as transformers' examples
    trainer.save_state()  # trainer_state.json: the whole log history, evaluations included

    if eval_set is not None:
        setting = args.setting or _inferred_setting(train_data, eval_data)
        table = _accuracy_table(trainer, eval_set, args.model_name or name_of(args.output_dir), setting)
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
        if trainer.is_world_process_zero():
            results = os.path.join(args.output_dir, RESULTS_STEM)
            card = None if args.no_model_card else os.path.join(args.output_dir, "README.md")
            _report(args, table, f"{results}.json", f"{results}.md", card, base_model=args.model)
    return 0


def _check_options(args: argparse.Namespace) -> None:
    check_training_options(args)
    if args.max_length < 8:
        raise ValueError(f"--max-length {args.max_length} leaves no room for a sentence pair; use at least 8.")


def _load_config(args: argparse.Namespace):
    config = load_checked_config(args)
    if args.labels:
        names = args.labels
    elif not is_placeholder_labels(config.id2label):
        names = [config.id2label[index] for index in sorted(config.id2label)]
    else:
        names = list(XNLI_LABELS)
    return config, dict(enumerate(names))


def _load_data(args: argparse.Namespace, files: list[str], id2label: dict[int, str], languages):
    disable_progress_bar()  # instant for NLI-sized files; keeps an error the only line on stderr

    columns = ColumnNames(args.premise_column, args.hypothesis_column, args.label_column, args.language_column)
    label2id = {name: index for index, name in id2label.items()}
    return load_nli_data(files, label2id, columns, languages)


def _load_model(args: argparse.Namespace, config, id2label: dict[int, str], new_head_allowed: bool = True):
    config.num_labels = len(id2label)
    config.id2label = id2label
    config.label2id = {name: index for index, name in id2label.items()}
    # For training, explicit --labels may differ from a trained head's size: that head starts afresh.
    return XLMRForSequenceClassification.from_pretrained(
        args.model, config=config, ignore_mismatched_sizes=new_head_allowed and bool(args.labels)
    )


def _trainer(model, training_args, tokenizer, train_set, eval_set):
    # Pad each batch to its own longest pair; multiples of 8 suit tensor cores under mixed precision.
    mixed = training_args.bf16 or training_args.fp16
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed else None)
    return Trainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        compute_metrics=_accuracy_metrics(eval_set["language"]) if eval_set is not None else None,
    )


def _accuracy_metrics(languages: list[str]):
    """`compute_metrics` for Trainer: overall accuracy plus one entry per language.

    Trainer returns predictions in dataset order (also under DDP, where `gather_for_metrics` drops the
    padding duplicates), so the eval set's language column lines up with them.
    """

    def compute(prediction) -> dict[str, float]:
        predicted = prediction.predictions.argmax(-1)
        return AccuracyTable.from_predictions(predicted, prediction.label_ids, languages, model="").metrics()

    return compute


def _inferred_setting(train_data, eval_data) -> str | None:
    return infer_setting(train_data.unique("language"), eval_data.unique("language"))


def _accuracy_table(trainer, eval_set, model_name: str, setting: str | None):
    output = trainer.predict(eval_set)
    predicted = output.predictions.argmax(-1)
    return AccuracyTable.from_predictions(predicted, output.label_ids, eval_set["language"], model_name, setting)


def _report(
    args: argparse.Namespace,
    table,
    json_path: str | None,
    markdown_path: str | None,
    card: str | None,
    base_model: str | None = None,
):
    """Write the table where asked (main process only) and print it."""
    if json_path or markdown_path:
        write_results(table, json_path, markdown_path)
    if card:
        update_model_card(card, table, args.dataset_type, args.dataset_name, args.eval_split, base_model)
    print(table.to_markdown())


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def evaluate(args: argparse.Namespace) -> int:
    _check_options(args)
    check_card_target(args)
    config, id2label = _load_config(args)
    if is_placeholder_labels(config.id2label) and not args.labels:
        raise ValueError(
            f"{args.model} has no label names (id2label is {config.id2label}); it is not a fine-tuned NLI model, "
            "or pass its label names in id order with --labels."
        )
    if args.labels and len(args.labels) != config.num_labels:
        raise ValueError(
            f"--labels names {len(args.labels)} labels but {args.model} has {config.num_labels} outputs; "
            "name exactly one label per output, in id order."
        )
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xlmr-evaluate-") as scratch:
        training_args = evaluation_arguments(args, args.output_dir or scratch)
        with training_args.main_process_first(desc="reading the data"):
            eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages)
            tokenizer = load_tokenizer(args)
            eval_set = tokenize_pairs(eval_data, tokenizer, args.max_length)
        model = _load_model(args, config, id2label, new_head_allowed=False)
        trainer = _trainer(model, training_args, tokenizer, None, eval_set)
        table = _accuracy_table(trainer, eval_set, args.model_name or name_of(args.model), args.setting)
    if args.output_dir:
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
    if trainer.is_world_process_zero():
        json_path, markdown_path, card = evaluation_targets(args, RESULTS_STEM)
        _report(args, table, json_path, markdown_path, card)
    return 0


__all__ = ["evaluate", "finetune"]
