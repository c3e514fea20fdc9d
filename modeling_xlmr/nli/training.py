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
import json
import os
import shutil
import tempfile
import zipfile

import torch
from datasets.utils.logging import disable_progress_bar
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_xlmr import XLMRConfig
from ..hub.loading import load_tokenizer
from ..modeling_xlmr import XLMRForSequenceClassification
from .data import (
    XNLI_LABELS,
    ColumnNames,
    is_placeholder_labels,
    load_nli_data,
    tokenize_pairs,
)
from .evaluation import AccuracyTable, infer_setting, update_model_card, write_results

RESULTS_STEM = "nli_accuracy"  # OUT/nli_accuracy.json and OUT/nli_accuracy.md
STAGING_DIR = ".final-model.tmp"
SAVE_LAST = "config.json"  # moved last: a directory without it is not (yet) a loadable model


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------


def finetune(args: argparse.Namespace) -> int:
    _check_options(args)
    checkpoint = _resolve_checkpoint(args)
    _check_output_dir(args, resuming=checkpoint is not None)
    training_args = _training_arguments(args)
    config, id2label = _load_config(args)

    with training_args.main_process_first(desc="reading the data"):
        train_data = _load_data(args, args.train_file, id2label, args.train_languages)
        eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages) if args.eval_file else None
        tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
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
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
        if trainer.is_world_process_zero():
            results = os.path.join(args.output_dir, RESULTS_STEM)
            card = None if args.no_model_card else os.path.join(args.output_dir, "README.md")
            _report(args, table, f"{results}.json", f"{results}.md", card, base_model=args.model)
    return 0


def _check_options(args: argparse.Namespace) -> None:
    if args.bf16 and args.fp16:
        raise ValueError("--bf16 and --fp16 exclude each other; pick one.")
    if args.max_length < 8:
        raise ValueError(f"--max-length {args.max_length} leaves no room for a sentence pair; use at least 8.")
    if getattr(args, "eval_strategy", "no") != "no" and not args.eval_file:
        raise ValueError(f"--eval-strategy {args.eval_strategy} needs --eval-file.")


def _check_output_dir(args: argparse.Namespace, resuming: bool) -> None:
    """The output may not be the model it starts from, nor a directory holding something else."""
    output = os.path.realpath(args.output_dir)
    if os.path.isdir(args.model) and output == os.path.realpath(args.model):
        raise ValueError(
            f"--output-dir {args.output_dir} is the model directory: fine-tuning would overwrite the pretrained "
            "weights and config; choose a new directory."
        )
    if os.path.isdir(output) and os.listdir(output) and not resuming and not args.overwrite_output_dir:
        raise ValueError(
            f"--output-dir {args.output_dir} is not empty; choose a new directory, resume with "
            "--resume-from-checkpoint, or pass --overwrite-output-dir to write over (nothing there is deleted)."
        )


def _resolve_checkpoint(args: argparse.Namespace) -> str | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        latest = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if latest is None:
            raise ValueError(
                f"No checkpoint-N directory in {args.output_dir} to resume from; drop --resume-from-checkpoint."
            )
        return latest
    if not os.path.isfile(os.path.join(args.resume_from_checkpoint, "trainer_state.json")):
        raise ValueError(
            f"{args.resume_from_checkpoint} is not a Trainer checkpoint (no trainer_state.json); "
            "give a checkpoint-N directory from --output-dir, or 'latest'."
        )
    check_checkpoint_files(args.resume_from_checkpoint)
    return args.resume_from_checkpoint


def check_checkpoint_files(directory: str) -> None:
    """Every weight and state file of a Trainer checkpoint must be whole, or resuming dies deep in torch:
    safetensors files must hold all the bytes their header promises, torch files (zip archives) must pass
    their CRC checks."""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        damage = None
        if name.endswith(".safetensors"):
            damage = safetensors_damage(path)
        elif name.endswith((".pt", ".pth", ".bin")):
            damage = torch_file_damage(path)
        if damage:
            raise ValueError(
                f"{path} is damaged ({damage}); resume from an earlier checkpoint-N, or start over without "
                "--resume-from-checkpoint."
            )


def safetensors_damage(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
    except (OSError, ValueError) as error:
        return f"unreadable header: {error}"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if os.path.getsize(path) < 8 + header_size + end:
        return f"{os.path.getsize(path)} bytes, the header describes {8 + header_size + end}"
    return None


def torch_file_damage(path: str) -> str | None:
    if not zipfile.is_zipfile(path):
        return "not a complete torch archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return str(error)
    return f"{bad} fails its CRC check" if bad else None


def _training_arguments(args: argparse.Namespace):
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
    return torch.cuda.is_available() and not args.use_cpu  # pinning without an accelerator only warns


def _load_config(args: argparse.Namespace):
    config = XLMRConfig.from_pretrained(args.model)
    if args.max_length > config.max_sequence_length:
        raise ValueError(
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
    return infer_setting(train_data.unique("language"), eval_data.unique("language"))


def _accuracy_table(trainer, eval_set, model_name: str, setting: str | None):
    output = trainer.predict(eval_set)
    predicted = output.predictions.argmax(-1)
    return AccuracyTable.from_predictions(predicted, output.label_ids, eval_set["language"], model_name, setting)


def _report(args, table, json_path: str | None, markdown_path: str | None, card: str | None, base_model=None):
    """Write the table where asked (main process only) and print it. A new card names `base_model`."""
    if json_path or markdown_path:
        write_results(table, json_path, markdown_path)
    if card:
        update_model_card(card, table, args.dataset_type, args.dataset_name, args.eval_split, base_model_dir=base_model)
    print(table.to_markdown())


def _name_of(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def evaluate(args: argparse.Namespace) -> int:
    _check_options(args)
    if args.update_model_card and not os.path.isdir(args.model):
        raise ValueError(f"--update-model-card needs a local model directory; {args.model} is not one.")
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
        training_args = TrainingArguments(
            output_dir=args.output_dir or scratch,
            per_device_eval_batch_size=args.per_device_eval_batch_size,
            bf16_full_eval=args.bf16,
            fp16_full_eval=args.fp16,
            use_cpu=args.use_cpu,
            dataloader_pin_memory=_pin_memory(args),
            report_to="none",
        )
        with training_args.main_process_first(desc="reading the data"):
            eval_data = _load_data(args, args.eval_file, id2label, args.eval_languages)
            tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
            eval_set = tokenize_pairs(eval_data, tokenizer, args.max_length)
        model = _load_model(args, config, id2label, new_head_allowed=False)
        trainer = _trainer(model, training_args, tokenizer, None, eval_set)
        table = _accuracy_table(trainer, eval_set, args.model_name or _name_of(args.model), args.setting)
    if args.output_dir:
        trainer.save_metrics("eval", table.metrics("eval"))  # eval_results.json + all_results.json
    if trainer.is_world_process_zero():
        card = os.path.join(args.model, "README.md") if args.update_model_card else None
        results = os.path.join(args.output_dir, RESULTS_STEM) if args.output_dir else None
        json_path = args.results_json or (results and f"{results}.json")
        markdown_path = args.results_markdown or (results and f"{results}.md")
        _report(args, table, json_path, markdown_path, card)
    return 0


__all__ = ["evaluate", "finetune"]
