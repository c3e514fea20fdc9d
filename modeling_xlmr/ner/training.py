"""NER fine-tuning and evaluation with Transformers' `Trainer` and `XLMRForTokenClassification`.

`finetune(options)` / `evaluate(options)` take the options of `xlmr finetune --task ner` / `xlmr evaluate
--task ner` (see `modeling_xlmr.cli.finetune`) and run unchanged on one process or under `accelerate launch`
(DDP), with `--resume-from-checkpoint`, bf16/fp16 and optional LoRA (`--lora`). Data, labels and windows are
checked before the model is loaded.

Sentences are split into windows (`alignment`); evaluation predicts every window, gives each word the label of
the window where it is most central and scores whole sentences with seqeval (`metrics`). Written beside the
model: `eval_results.json` / `all_results.json` (`eval_f1`, `eval_<language>_f1`, ...), the table as
`ner_f1.json` / `ner_f1.md`, every evaluated sentence's words, gold and predicted tags as
`eval_predictions.jsonl`, and optionally the card's `model-index`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
from datasets import Dataset
from datasets.utils.logging import disable_progress_bar
from transformers import DataCollatorForTokenClassification, Trainer, set_seed

from model_cards import languages as model_languages

from ..common.dependencies import require
from ..common.files import atomic_file
from ..modeling_xlmr import XLMRForTokenClassification
from ..training.lora import apply_lora, check_lora_options, save_adapter_and_merged
from ..training.results import check_card_target, evaluation_targets, infer_setting
from ..training.trainer import (
    check_output_dir,
    check_training_options,
    evaluation_arguments,
    is_placeholder_labels,
    load_checked_config,
    load_tokenizer,
    name_of,
    resolve_checkpoint,
    save_final_model,
    training_arguments,
)
from .alignment import IGNORED, Window, build_windows, merge_predictions, space_piece_id, word_pieces
from .data import ColumnNames, NERData, choose_labels, read_ner_files, resolve_tags
from .metrics import EntityTable, update_model_card, write_results
from .tags import OUTSIDE, inside_tag, is_valid_tag

RESULTS_STEM = "ner_f1"  # OUT/ner_f1.json and OUT/ner_f1.md
PREDICTIONS_FILE = "eval_predictions.jsonl"


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------


def finetune(args: argparse.Namespace) -> int:
    _check_options(args)
    check_lora_options(args)
    checkpoint = resolve_checkpoint(args)
    check_output_dir(args, resuming=checkpoint is not None)
    training_args = training_arguments(args)
    config = load_checked_config(args)

    with training_args.main_process_first(desc="reading the data"):
        train = _read(args, args.train_file, args.train_languages)
        evaluation = _read(args, args.eval_file, args.eval_languages) if args.eval_file else None
        labels = choose_labels(train, args.labels, _model_labels(config))
        for data in (train, evaluation):
            if data is not None:
                resolve_tags(data, labels)
        tokenizer = load_tokenizer(args)
        train_windows = _windows(train, tokenizer, labels, args, args.label_all_pieces)
        eval_windows = _windows(evaluation, tokenizer, labels, args, False) if evaluation else None

    set_seed(args.seed)  # the classification head is initialized here, before Trainer seeds anything
    model = _load_model(args.model, config, labels, new_head_allowed=True)
    if args.lora:
        model = apply_lora(model, args, "TOKEN_CLS")
    trainer = _trainer(model, training_args, tokenizer, train_windows, eval_windows, evaluation, labels)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if args.lora:
        save_adapter_and_merged(trainer, args.output_dir)
    else:
        save_final_model(trainer, args.output_dir)
    trainer.save_metrics("train", train_result.metrics)  # train_results.json, as transformers' examples
    trainer.save_state()

    if evaluation is not None:
        setting = args.setting or infer_setting(train.languages(), evaluation.languages())
        name = args.model_name or name_of(args.output_dir)
        table, predicted = _evaluate(trainer, eval_windows, evaluation, labels, name, setting)
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
        if trainer.is_world_process_zero():
            results = os.path.join(args.output_dir, RESULTS_STEM)
            card = None if args.no_model_card else os.path.join(args.output_dir, "README.md")
            write_predictions(os.path.join(args.output_dir, PREDICTIONS_FILE), evaluation, predicted)
            _report(args, table, f"{results}.json", f"{results}.md", card, base_model=args.model)
    return 0


def _check_options(args: argparse.Namespace) -> None:
    check_training_options(args)
    if args.eval_file:
        require("seqeval")  # scores need it: say so before training, not after
    if args.max_length < 3:
        raise ValueError(f"--max-length {args.max_length} leaves no room for a word; use at least 3.")
    if not 0 <= args.stride < args.max_length - 2:
        raise ValueError(
            f"--stride {args.stride} must be at least 0 and smaller than --max-length minus 2 "
            f"({args.max_length - 2}); windows overlap by that many pieces."
        )


def _read(args: argparse.Namespace, files: list[str], languages) -> NERData:
    disable_progress_bar()
    columns = ColumnNames(args.tokens_column, args.tags_column, args.language_column)
    known = [entry["code"].split("-")[0] for entry in model_languages()]
    return read_ner_files(files, columns, known, languages)


def _model_labels(config) -> list[str] | None:
    """The model's label names when it is a fine-tuned NER model (every name a tag), else None."""
    if is_placeholder_labels(config.id2label):
        return None
    names = [str(config.id2label[index]) for index in sorted(config.id2label)]
    return names if all(is_valid_tag(name) for name in names) else None


def _windows(data: NERData, tokenizer, labels: list[str], args, label_all_pieces: bool) -> list[Window]:
    label2id = {name: index for index, name in enumerate(labels)}
    pieces = word_pieces(tokenizer, [sentence.words for sentence in data.sentences])
    word_labels = [[label2id[tag] for tag in sentence.tags] for sentence in data.sentences]
    inside = [label2id[inside_tag(name, labels)] for name in labels] if label_all_pieces else None
    space_label = label2id.get(OUTSIDE, IGNORED) if label_all_pieces else IGNORED
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id)
    return build_windows(
        pieces, word_labels, args.max_length, args.stride, special, inside, space_piece_id(tokenizer), space_label
    )


def _dataset(windows: list[Window]) -> Dataset:
    return Dataset.from_dict(
        {
            "input_ids": [window.input_ids for window in windows],
            "attention_mask": [[1] * len(window.input_ids) for window in windows],
            "labels": [window.labels for window in windows],
        }
    )


def _load_model(model: str, config, labels: list[str], new_head_allowed: bool):
    before = [str(config.id2label[index]) for index in sorted(config.id2label)]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: index for index, name in enumerate(labels)}
    # A head trained for other labels (or a sequence head) starts afresh with these labels.
    return XLMRForTokenClassification.from_pretrained(
        model, config=config, ignore_mismatched_sizes=new_head_allowed and before != labels
    )


def _trainer(model, training_args, tokenizer, train_windows, eval_windows, evaluation, labels) -> Trainer:
    mixed = training_args.bf16 or training_args.fp16 or training_args.bf16_full_eval or training_args.fp16_full_eval
    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8 if mixed else None)
    metrics = None
    if eval_windows is not None:

        def metrics(prediction) -> dict[str, float]:
            table, _ = _table(prediction.predictions, eval_windows, evaluation, labels, model="", setting=None)
            return table.metrics()

    return Trainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=_dataset(train_windows) if train_windows is not None else None,
        eval_dataset=_dataset(eval_windows) if eval_windows is not None else None,
        processing_class=tokenizer,
        compute_metrics=metrics,
        preprocess_logits_for_metrics=_argmax,
    )


def _argmax(logits, labels):
    """Keep the predicted label ids only: all the metrics need, and far less to gather than the logits."""
    return logits.argmax(-1)


def _table(predicted_ids, windows, data: NERData, labels, model: str, setting: str | None):
    """Per-window label ids (Trainer's order: the eval set's) -> word tags -> the entity table."""
    predicted_ids = np.asarray(predicted_ids)
    word_counts = [len(sentence.words) for sentence in data.sentences]
    merged = merge_predictions(windows, predicted_ids, word_counts)
    predicted = [[labels[label] for label in sentence] for sentence in merged]
    gold = [sentence.tags for sentence in data.sentences]
    languages = [sentence.language for sentence in data.sentences]
    return EntityTable.from_predictions(gold, predicted, languages, labels, model, setting), predicted


def _evaluate(trainer, windows, data: NERData, labels, model: str, setting: str | None):
    output = trainer.predict(_dataset(windows))
    return _table(output.predictions, windows, data, labels, model, setting)


def write_predictions(path: str, data: NERData, predicted: list[list[str]]) -> None:
    """One JSON line per evaluated sentence: where it came from, its language, words, gold and predicted tags."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        for sentence, tags in zip(data.sentences, predicted, strict=True):
            row = {
                "origin": sentence.origin,
                "language": sentence.language,
                "words": sentence.words,
                "gold": sentence.tags,
                "tags": tags,
            }
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


def _report(
    args,
    table: EntityTable,
    json_path: str | None,
    markdown_path: str | None,
    card: str | None,
    base_model: str | None = None,
) -> None:
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
    config = load_checked_config(args)
    labels = args.labels or _model_labels(config)
    if labels is None:
        raise ValueError(
            f"{args.model} has no NER label names (id2label is {config.id2label}); it is not a fine-tuned NER "
            "model, or pass its tags in id order with --labels."
        )
    if len(labels) != config.num_labels:
        raise ValueError(
            f"--labels names {len(labels)} labels but {args.model} has {config.num_labels} outputs; "
            "name exactly one tag per output, in id order."
        )
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xlmr-evaluate-") as scratch:
        training_args = evaluation_arguments(args, args.output_dir or scratch)
        with training_args.main_process_first(desc="reading the data"):
            evaluation = _read(args, args.eval_file, args.eval_languages)
            resolve_tags(evaluation, labels)
            tokenizer = load_tokenizer(args)
            windows = _windows(evaluation, tokenizer, labels, args, False)
        model = _load_model(args.model, config, labels, new_head_allowed=False)
        trainer = _trainer(model, training_args, tokenizer, None, windows, evaluation, labels)
        name = args.model_name or name_of(args.model)
        table, predicted = _evaluate(trainer, windows, evaluation, labels, name, args.setting)
    if args.output_dir:
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
    if trainer.is_world_process_zero():
        json_path, markdown_path, card = evaluation_targets(args, RESULTS_STEM)
        if args.output_dir:
            write_predictions(os.path.join(args.output_dir, PREDICTIONS_FILE), evaluation, predicted)
        _report(args, table, json_path, markdown_path, card)
    return 0


__all__ = ["PREDICTIONS_FILE", "evaluate", "finetune", "write_predictions"]
