"""`xlmr finetune` and `xlmr evaluate`: XNLI-style sentence-pair classification (`--task nli`, the default) and
named-entity recognition (`--task ner`) with Transformers' `Trainer`."""

from __future__ import annotations

import argparse

FINETUNE_DESCRIPTION = """Fine-tune XLM-R on premise/hypothesis/label data (XNLI-style) with Trainer.

Cross-lingual transfer and translate-train-all are just data options:

    # cross-lingual transfer: train on English, test on every language
    xlmr finetune --model xlmr.base --output-dir xnli-en --train-file multinli.train.en.tsv \\
        --eval-file xnli.test.tsv
    # translate-train-all: train on every language
    xlmr finetune --model xlmr.base --output-dir xnli-all --train-file multinli.train.*.tsv \\
        --eval-file xnli.test.tsv

Named entities (--task ner) from CoNLL files or tokens/ner_tags tables, e.g. the paper's cross-lingual CoNLL:

    xlmr finetune --task ner --model xlmr.base --output-dir ner-en --train-file eng.train \
        --eval-file eng.testb ned.testb esp.testb deu.testb

Runs unchanged under `accelerate launch` (DDP). Needs the `finetune` extra (datasets); NER also needs the `ner`
extra (seqeval) and --lora the `lora` extra (peft).
"""

TASK_DEFAULTS = {  # what the model-index results are filed under, unless --dataset-type/--dataset-name say
    "nli": {"dataset_type": "xnli", "dataset_name": "XNLI"},
    "ner": {"dataset_type": "wikiann", "dataset_name": "WikiANN"},
}


def add_subcommands(subparsers) -> None:
    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune XLM-R for premise/hypothesis classification (XNLI) with Trainer",
        description=FINETUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_and_data_options(finetune, training=True)
    _add_training_options(finetune)
    _add_lora_options(finetune)
    _add_report_options(finetune, training=True)
    finetune.set_defaults(func=run_finetune)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="accuracy (NLI) or entity F1 (NER) per language and averaged, as a markdown table and JSON",
        description="Evaluate a sequence-pair classifier (XNLI table) or an NER model (the paper's NER table) "
        "per language.",
    )
    _add_model_and_data_options(evaluate, training=False)
    evaluate.add_argument(
        "--output-dir",
        help="write eval_results.json, all_results.json and the table (nli_accuracy / ner_f1 .json/.md) here",
    )
    evaluate.add_argument("--per-device-eval-batch-size", type=int, default=64)
    evaluate.add_argument("--bf16", action="store_true", help="evaluate in bfloat16")
    evaluate.add_argument("--fp16", action="store_true", help="evaluate in float16")
    evaluate.add_argument("--use-cpu", action="store_true", help="stay on the CPU even if a GPU is present")
    _add_report_options(evaluate, training=False)
    evaluate.set_defaults(func=run_evaluate)


def _add_model_and_data_options(parser: argparse.ArgumentParser, training: bool) -> None:
    parser.add_argument("--task", choices=("nli", "ner"), default="nli", help="sentence pairs or named entities")
    parser.add_argument("--model", required=True, help="converted XLM-R directory or any XLM-R repo")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a repo's own tokenizer code run (never needed for this package's repos or stock XLM-R)",
    )
    files_help = (
        "data file(s): NLI .jsonl/.json/.csv/.tsv/.parquet, NER CoNLL (any extension) or .jsonl/.json/.parquet "
        "with tokens/ner_tags; prefix LANG= to tag a file without a language column (fr=xnli.test.fr.jsonl); "
        "XNLI-MT names (multinli.train.fr.tsv), CoNLL names (ned.testb) and WikiANN's lang: prefix tag themselves"
    )
    if training:
        parser.add_argument("--output-dir", required=True, help="where checkpoints and the final model go")
        parser.add_argument(
            "--overwrite-output-dir",
            action="store_true",
            help="write into a non-empty --output-dir (its files are written over, none is deleted)",
        )
        parser.add_argument("--train-file", nargs="+", action="extend", required=True, help=files_help)
        parser.add_argument("--eval-file", nargs="+", action="extend", default=[], help=files_help)
        parser.add_argument("--train-languages", type=_language_list, help="keep only these training languages")
        parser.add_argument(
            "--label-all-pieces",
            action="store_true",
            help="NER: train every piece of a word (the I- tag after the first) instead of the first piece only",
        )
    else:
        parser.add_argument("--eval-file", nargs="+", action="extend", required=True, help=files_help)
    parser.add_argument("--eval-languages", type=_language_list, help="keep only these evaluation languages (en,fr)")
    for role in ("premise", "hypothesis", "label", "language", "tokens", "tags"):
        parser.add_argument(f"--{role}-column", help=f"name of the {role} column (default: the usual names)")
    parser.add_argument(
        "--labels",
        type=_language_list,
        help="label names in id order (default: the model's id2label, else NLI: entailment,neutral,contradiction; "
        "NER: the tags the data uses, O first)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="tokens per input: pairs are truncated to it, NER sentences cut into windows of it",
    )
    parser.add_argument(
        "--stride", type=int, default=32, help="NER: pieces consecutive windows of a long sentence share"
    )


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


def _add_lora_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LoRA (needs the lora extra: peft)")
    group.add_argument("--lora", action="store_true", help="train LoRA adapters (and the head) instead of all weights")
    group.add_argument("--lora-rank", type=int, default=8, help="rank r of the adapters")
    group.add_argument("--lora-alpha", type=float, default=16.0, help="scaling alpha (updates scale by alpha / r)")
    group.add_argument("--lora-dropout", type=float, default=0.1)
    group.add_argument(
        "--lora-target-modules",
        type=_language_list,
        help="comma-separated module names to adapt (default: query,value)",
    )


def _add_report_options(parser: argparse.ArgumentParser, training: bool) -> None:
    group = parser.add_argument_group("results")
    group.add_argument("--model-name", help="row name in the results table (default: the model directory's name)")
    group.add_argument(
        "--setting",
        help="e.g. translate-train-all or cross-lingual transfer (default: inferred from the training languages)"
        if training
        else "e.g. translate-train-all or cross-lingual transfer",
    )
    group.add_argument("--dataset-type", help="Hub dataset id for the model-index results (xnli / wikiann)")
    group.add_argument("--dataset-name", help="dataset name shown in the model card (XNLI / WikiANN)")
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


def _with_task_defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def run_finetune(args: argparse.Namespace) -> int:
    if args.task == "ner":
        from ..ner.training import finetune
    else:
        from ..nli.training import finetune

    return finetune(_with_task_defaults(args))


def run_evaluate(args: argparse.Namespace) -> int:
    if args.task == "ner":
        from ..ner.training import evaluate
    else:
        from ..nli.training import evaluate

    return evaluate(_with_task_defaults(args))


__all__ = ["add_subcommands"]
