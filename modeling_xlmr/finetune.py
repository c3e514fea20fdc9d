"""`xlmr finetune` and `xlmr evaluate`: XNLI-style sentence-pair classification with Transformers' `Trainer`.

Both commands run unchanged on one process or under `accelerate launch` (DDP): `Trainer` shards the
data, and only the main process writes files. Cross-lingual transfer and translate-train-all are
just data options::

    # cross-lingual transfer: train on English, test on every language
    xlmr finetune --model xlmr.base --output-dir xnli-en --train-file multinli.train.en.tsv \\
        --eval-file xnli.test.tsv
    # translate-train-all: train on every language
    xlmr finetune --model xlmr.base --output-dir xnli-all --train-file multinli.train.*.tsv \\
        --eval-file xnli.test.tsv

Everything about the data (files, columns, labels, languages) is checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from .cli import CLIError

RESULTS_STEM = "nli_accuracy"  # OUT/nli_accuracy.json and OUT/nli_accuracy.md
STAGING_DIR = ".final-model.tmp"
SAVE_LAST = "config.json"  # moved last: a directory without it is not (yet) a loadable model


def add_subcommands(subparsers) -> None:
    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune XLM-R for premise/hypothesis classification (XNLI) with Trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_and_data_options(finetune, training=True)
    _add_training_options(finetune)
    _add_report_options(finetune, training=True)
    finetune.set_defaults(func=run_finetune)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="accuracy per language (and average) of an NLI model, as a markdown table and JSON",
        description="Evaluate a sequence-pair classifier per language, like the seed's XNLI table.",
    )
    _add_model_and_data_options(evaluate, training=False)
    evaluate.add_argument("--per-device-eval-batch-size", type=int, default=64)
    evaluate.add_argument("--bf16", action="store_true", help="evaluate in bfloat16")
    evaluate.add_argument("--fp16", action="store_true", help="evaluate in float16")
    evaluate.add_argument("--use-cpu", action="store_true", help="stay on the CPU even if a GPU is present")
    _add_report_options(evaluate, training=False)
    evaluate.set_defaults(func=run_evaluate)


def _add_model_and_data_options(parser: argparse.ArgumentParser, training: bool) -> None:
    parser.add_argument("--model", required=True, help="converted XLM-R directory or any XLM-R repo")
    files_help = (
        "data file(s): .jsonl/.json/.csv/.tsv/.parquet; prefix LANG= to tag a file without a language "
        "column (fr=xnli.test.fr.jsonl); XNLI-MT names (multinli.train.fr.tsv) tag themselves"
    )
    if training:
        parser.add_argument("--output-dir", required=True, help="where checkpoints and the final model go")
        parser.add_argument("--train-file", nargs="+", action="extend", required=True, help=files_help)
        parser.add_argument("--eval-file", nargs="+", action="extend", default=[], help=files_help)
        parser.add_argument("--train-languages", type=_language_list, help="keep only these training languages")
    else:
        parser.add_argument("--eval-file", nargs="+", action="extend", required=True, help=files_help)
    parser.add_argument("--eval-languages", type=_language_list, help="keep only these evaluation languages (en,fr)")
    for role in ("premise", "hypothesis", "label", "language"):
        parser.add_argument(f"--{role}-column", help=f"name of the {role} column (default: the usual names)")
    parser.add_argument(
        "--labels",
        type=_language_list,
        help="label names in id order (default: the model's id2label, else entailment,neutral,contradiction)",
    )
    parser.add_argument("--max-length", type=int, default=128, help="truncate pairs to this many tokens")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--learning-rate", type=float, default=2e-5)
    group.add_argument("--num-train-epochs", type=float, default=3.0)
    group.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides epochs)")
    group.add_argument("--per-device-train-batch-size", "--batch-size", type=int, default=32)
    group.add_argument("--per-device-eval-batch-size", type=int, default=64)
    group.add_argument("--gradient-accumulation-steps", type=int, default=1)
    group.add_argument("--warmup", type=float, default=0.1, help="warmup steps, or a fraction of all steps if < 1")
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    group.add_argument("--fp16", action="store_true", help="float16 mixed precision")
    group.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    group.add_argument("--group-by-length", action="store_true", help="batch pairs of similar length (less padding)")
    group.add_argument("--eval-strategy", choices=("no", "steps", "epoch"), default="no")
    group.add_argument("--eval-steps", type=float, help="steps between evaluations with --eval-strategy steps")
    group.add_argument("--save-strategy", choices=("no", "steps", "epoch"), default="epoch")
    group.add_argument("--save-steps", type=float, default=500)
    group.add_argument("--save-total-limit", type=int, help="keep at most this many checkpoints")
    group.add_argument("--logging-steps", type=float, default=50)
    group.add_argument(
        "--resume-from-checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint-N directory, or 'latest' for the newest one in --output-dir",
    )
    group.add_argument("--use-cpu", action="store_true", help="stay on the CPU even if a GPU is present")


def _add_report_options(parser: argparse.ArgumentParser, training: bool) -> None:
    group = parser.add_argument_group("results")
    group.add_argument("--model-name", help="row name in the results table (default: the model directory's name)")
    group.add_argument(
        "--setting",
        help="e.g. translate-train-all or cross-lingual transfer (default: inferred from the training languages)"
        if training
        else "e.g. translate-train-all or cross-lingual transfer",
    )
    group.add_argument("--dataset-type", default="xnli", help="Hub dataset id for the model-index results")
    group.add_argument("--dataset-name", default="XNLI", help="dataset name shown in the model card")
    group.add_argument("--eval-split", default="test", help="split name for the model-index results")
    if training:
        group.add_argument(
            "--no-model-card", action="store_true", help="do not write results into OUTPUT_DIR/README.md"
        )
    else:
        group.add_argument("--results-json", help="write the table as JSON here")
        group.add_argument("--results-markdown", help="write the markdown table here")
        group.add_argument(
            "--update-model-card", action="store_true", help="add the results to MODEL/README.md (local model)"
        )


def _language_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. en,fr")
    return items


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------


def run_finetune(args: argparse.Namespace) -> int:
    from transformers import set_seed

    from .nli_data import tokenize_pairs

    _check_options(args)
    checkpoint = _resolve_checkpoint(args)
    training_args = _training_arguments(args)
    config, id2label = _load_config(args)

    with training_args.main_process_first(desc="reading the data"):
        train_data = _load_data(args, args.train_file, id2label, args.train_languages)
        eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages) if args.eval_file else None
        tokenizer = _load_tokenizer(args.model)
        train_set = tokenize_pairs(train_data, tokenizer, args.max_length)
        eval_set = tokenize_pairs(eval_data, tokenizer, args.max_length) if eval_data is not None else None

    set_seed(args.seed)  # the classification head is initialized here, before Trainer seeds anything
    model = _load_model(args, config, id2label)
    trainer = _trainer(model, training_args, tokenizer, train_set, eval_set)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    _save_final_model(trainer, args.output_dir)
    trainer.save_metrics("train", train_result.metrics)  # train_results.json, as transformers' examples
    trainer.save_state()  # trainer_state.json: the whole log history, evaluations included

    if eval_set is not None:
        setting = args.setting or _inferred_setting(train_data, eval_data)
        table = _accuracy_table(trainer, eval_set, args.model_name or _name_of(args.output_dir), setting)
        if trainer.is_world_process_zero():
            results = os.path.join(args.output_dir, RESULTS_STEM)
            card = None if args.no_model_card else os.path.join(args.output_dir, "README.md")
            _report(args, table, f"{results}.json", f"{results}.md", card)
    return 0


def _check_options(args: argparse.Namespace) -> None:
    if args.bf16 and args.fp16:
        raise CLIError("--bf16 and --fp16 exclude each other; pick one.")
    if args.max_length < 8:
        raise CLIError(f"--max-length {args.max_length} leaves no room for a sentence pair; use at least 8.")
    if getattr(args, "eval_strategy", "no") != "no" and not args.eval_file:
        raise CLIError(f"--eval-strategy {args.eval_strategy} needs --eval-file.")


def _resolve_checkpoint(args: argparse.Namespace) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        latest = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if latest is None:
            raise CLIError(
                f"No checkpoint-N directory in {args.output_dir} to resume from; drop --resume-from-checkpoint."
            )
        return latest
    if not os.path.isfile(os.path.join(args.resume_from_checkpoint, "trainer_state.json")):
        raise CLIError(
            f"{args.resume_from_checkpoint} is not a Trainer checkpoint (no trainer_state.json); "
            "give a checkpoint-N directory from --output-dir, or 'latest'."
        )
    return args.resume_from_checkpoint


def _training_arguments(args: argparse.Namespace):
    from transformers import TrainingArguments

    def whole_if_integral(value: float | None):
        # Trainer reads floats < 1 as fractions of the run, integers as step counts.
        return int(value) if value is not None and value >= 1 and float(value).is_integer() else value

    return TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        warmup_steps=whole_if_integral(args.warmup),
        weight_decay=args.weight_decay,
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        activation_checkpointing=args.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        eval_strategy=args.eval_strategy,
        eval_steps=whole_if_integral(args.eval_steps),
        save_strategy=args.save_strategy,
        save_steps=whole_if_integral(args.save_steps),
        save_total_limit=args.save_total_limit,
        logging_steps=whole_if_integral(args.logging_steps),
        use_cpu=args.use_cpu,
        dataloader_pin_memory=_pin_memory(args),
        report_to="none",
        # Every parameter gets a gradient (this head has no unused pooler), so DDP needn't search for unused ones.
        ddp_find_unused_parameters=False,
    )


def _pin_memory(args: argparse.Namespace) -> bool:
    import torch

    return torch.cuda.is_available() and not args.use_cpu  # pinning without an accelerator only warns


def _load_config(args: argparse.Namespace):
    from .configuration_xlmr import XLMRConfig
    from .nli_data import XNLI_LABELS, is_placeholder_labels

    config = XLMRConfig.from_pretrained(args.model)
    if args.max_length > config.max_sequence_length:
        raise CLIError(
            f"--max-length {args.max_length} is longer than {args.model} accepts "
            f"({config.max_sequence_length} tokens); use at most {config.max_sequence_length}."
        )
    if args.labels:
        names = args.labels
    elif not is_placeholder_labels(config.id2label):
        names = [config.id2label[index] for index in sorted(config.id2label)]
    else:
        names = list(XNLI_LABELS)
    return config, dict(enumerate(names))


def _load_data(args: argparse.Namespace, files: list[str], id2label: dict[int, str], languages):
    from datasets.utils.logging import disable_progress_bar

    from .nli_data import ColumnNames, load_nli_data

    disable_progress_bar()  # instant for NLI-sized files; keeps an error the only line on stderr

    columns = ColumnNames(args.premise_column, args.hypothesis_column, args.label_column, args.language_column)
    label2id = {name: index for index, name in id2label.items()}
    return load_nli_data(files, label2id, columns, languages)


def _load_tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, trust_remote_code=True)


def _load_model(args: argparse.Namespace, config, id2label: dict[int, str], new_head_allowed: bool = True):
    from .modeling_xlmr import XLMRForSequenceClassification

    config.num_labels = len(id2label)
    config.id2label = id2label
    config.label2id = {name: index for index, name in id2label.items()}
    # For training, explicit --labels may differ from a trained head's size: that head starts afresh.
    return XLMRForSequenceClassification.from_pretrained(
        args.model, config=config, ignore_mismatched_sizes=new_head_allowed and bool(args.labels)
    )


def _trainer(model, training_args, tokenizer, train_set, eval_set):
    from transformers import DataCollatorWithPadding, Trainer

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
    from .nli_eval import AccuracyTable

    def compute(prediction) -> dict[str, float]:
        predicted = prediction.predictions.argmax(-1)
        table = AccuracyTable.from_predictions(predicted, prediction.label_ids, languages, model="")
        overall = float((predicted == prediction.label_ids).mean())
        return {
            "accuracy": overall,
            "accuracy_avg": table.average,
            **{f"accuracy_{k}": v for k, v in table.accuracy.items()},
        }

    return compute


def _save_final_model(trainer, output_dir: str) -> None:
    """Save into a staging directory, then move the files into OUTPUT_DIR, config.json last."""
    staging = os.path.join(output_dir, STAGING_DIR)
    trainer.save_model(staging)  # every process calls it; only the main one writes
    if trainer.is_world_process_zero():
        names = sorted(os.listdir(staging), key=lambda name: name == SAVE_LAST)
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()


def _inferred_setting(train_data, eval_data) -> str | None:
    from .nli_eval import infer_setting

    return infer_setting(train_data.unique("language"), eval_data.unique("language"))


def _accuracy_table(trainer, eval_set, model_name: str, setting: str | None):
    from .nli_eval import AccuracyTable

    output = trainer.predict(eval_set)
    predicted = output.predictions.argmax(-1)
    return AccuracyTable.from_predictions(predicted, output.label_ids, eval_set["language"], model_name, setting)


def _report(args: argparse.Namespace, table, json_path: str | None, markdown_path: str | None, card: str | None):
    """Write the table where asked (main process only) and print it."""
    from .nli_eval import update_model_card, write_results

    if json_path or markdown_path:
        write_results(table, json_path, markdown_path)
    if card:
        update_model_card(card, table, args.dataset_type, args.dataset_name, args.eval_split)
    print(table.to_markdown())


def _name_of(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def run_evaluate(args: argparse.Namespace) -> int:
    from transformers import TrainingArguments

    from .nli_data import is_placeholder_labels, tokenize_pairs

    _check_options(args)
    if args.update_model_card and not os.path.isdir(args.model):
        raise CLIError(f"--update-model-card needs a local model directory; {args.model} is not one.")
    config, id2label = _load_config(args)
    if is_placeholder_labels(config.id2label) and not args.labels:
        raise CLIError(
            f"{args.model} has no label names (id2label is {config.id2label}); it is not a fine-tuned NLI model, "
            "or pass its label names in id order with --labels."
        )
    if args.labels and len(args.labels) != config.num_labels:
        raise CLIError(
            f"--labels names {len(args.labels)} labels but {args.model} has {config.num_labels} outputs; "
            "name exactly one label per output, in id order."
        )
    with tempfile.TemporaryDirectory(prefix="xlmr-evaluate-") as scratch:
        training_args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=args.per_device_eval_batch_size,
            bf16_full_eval=args.bf16,
            fp16_full_eval=args.fp16,
            use_cpu=args.use_cpu,
            dataloader_pin_memory=_pin_memory(args),
            report_to="none",
        )
        with training_args.main_process_first(desc="reading the data"):
            eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages)
            tokenizer = _load_tokenizer(args.model)
            eval_set = tokenize_pairs(eval_data, tokenizer, args.max_length)
        model = _load_model(args, config, id2label, new_head_allowed=False)
        trainer = _trainer(model, training_args, tokenizer, None, eval_set)
        table = _accuracy_table(trainer, eval_set, args.model_name or _name_of(args.model), args.setting)
    if trainer.is_world_process_zero():
        card = os.path.join(args.model, "README.md") if args.update_model_card else None
        _report(args, table, args.results_json, args.results_markdown, card)
    return 0


__all__ = ["add_subcommands", "run_evaluate", "run_finetune"]
