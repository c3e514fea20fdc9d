"""`xlmr finetune` / `xlmr evaluate`: a tiny random XLM-R learns a synthetic NLI rule.

Accuracies are checked against predictions recomputed here from the saved model, not against numbers
the command reports about itself. (Data and model: `tests/support/nli.py`.)
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from modeling_xlmr.cli import main
from tests.support.nli import finetune_args, markdown_table, predictions_of, read_json

# ------------------------------------------------------------------------------------------ 1. it learns


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, nli_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned") / "tiny-nli"
    started = time.perf_counter()
    status = main(
        finetune_args(
            tiny_model_dir,
            out,
            nli_files["train"],
            "--eval-file",
            nli_files["test_tsv"],
            "--learning-rate",
            "1e-2",
            "--num-train-epochs",
            "4",
            "--batch-size",
            "32",
            "--weight-decay",
            "0",
            "--save-strategy",
            "no",
            "--seed",
            "0",
            "--use-cpu",
        )
    )
    seconds = time.perf_counter() - started
    print(f"\nfine-tuning + evaluation took {seconds:.1f}s")
    assert status == 0
    return str(out)


def test_finetune_learns_rule_in_each_language(finetuned, nli_files):
    results = read_json(os.path.join(finetuned, "nli_accuracy.json"))
    rows = nli_files["test_rows"]

    # The reported accuracies are what the saved model really gets on the held-out pairs.
    predicted = predictions_of(finetuned, rows)
    for lang in ("en", "fr"):
        pairs = [(p, r["label"]) for p, r in zip(predicted, rows) if r["language"] == lang]
        accuracy = sum(p == gold for p, gold in pairs) / len(pairs)
        assert accuracy >= 0.9, (lang, accuracy)
        assert results["accuracy"][lang] == pytest.approx(accuracy, abs=1e-9)
        assert results["examples"][lang] == len(pairs)
    assert results["average"] == pytest.approx((results["accuracy"]["en"] + results["accuracy"]["fr"]) / 2)
    # Trained on en and fr, tested on en and fr: the paper's translate-train-all setting.
    assert results["setting"] == "translate-train-all"

    # The markdown table reads back to the same numbers, in XNLI's column order, with the average last.
    table = markdown_table(os.path.join(finetuned, "nli_accuracy.md"))
    assert list(table) == ["en", "fr", "avg"]
    for lang in ("en", "fr"):
        assert table[lang] == pytest.approx(100 * results["accuracy"][lang], abs=0.051)
    assert table["avg"] == pytest.approx(100 * results["average"], abs=0.051)

    config = read_json(os.path.join(finetuned, "config.json"))
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}


def test_trainer_style_result_files_hold_the_same_numbers(finetuned, nli_files):
    """eval_results.json / all_results.json, as Trainer and transformers' example scripts write them."""
    rows = nli_files["test_rows"]
    predicted = predictions_of(finetuned, rows)
    overall = sum(p == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    table = read_json(os.path.join(finetuned, "nli_accuracy.json"))
    eval_results = read_json(os.path.join(finetuned, "eval_results.json"))
    assert eval_results["eval_accuracy"] == pytest.approx(overall, abs=1e-9)
    assert eval_results["eval_samples"] == len(rows)
    assert eval_results["eval_accuracy_avg"] == pytest.approx(table["average"], abs=1e-9)
    for lang in ("en", "fr"):
        assert eval_results[f"eval_accuracy_{lang}"] == pytest.approx(table["accuracy"][lang], abs=1e-9)
    all_results = read_json(os.path.join(finetuned, "all_results.json"))
    assert {key: all_results[key] for key in eval_results} == eval_results
    assert "train_loss" in all_results  # the training metrics share the file, as in transformers' examples


def test_model_card_holds_model_index_results(finetuned):
    from huggingface_hub import ModelCard

    results = read_json(os.path.join(finetuned, "nli_accuracy.json"))
    card = ModelCard.load(os.path.join(finetuned, "README.md"))
    found = {(r.dataset_type, r.dataset_config, r.dataset_split): r.metric_value for r in card.data.eval_results}
    assert found[("xnli", "en", "test")] == pytest.approx(results["accuracy"]["en"], abs=1e-4)
    assert found[("xnli", "fr", "test")] == pytest.approx(results["accuracy"]["fr"], abs=1e-4)
    assert found[("xnli", None, "test")] == pytest.approx(results["average"], abs=1e-4)
    assert all(r.metric_type == "accuracy" and r.task_type == "text-classification" for r in card.data.eval_results)


def test_evaluate_command_reproduces_and_updates_card(finetuned, nli_files, tmp_path):
    from huggingface_hub import ModelCard

    before = read_json(os.path.join(finetuned, "nli_accuracy.json"))
    status = main(
        [
            "evaluate",
            "--model",
            finetuned,
            "--eval-file",
            nli_files["test_tsv"],
            "--eval-languages",
            "fr",
            "--results-json",
            str(tmp_path / "fr.json"),
            "--results-markdown",
            str(tmp_path / "fr.md"),
            "--update-model-card",
            "--eval-split",
            "validation",
            "--setting",
            "cross-lingual transfer",
        ]
    )
    assert status == 0
    fr_only = read_json(tmp_path / "fr.json")
    assert list(fr_only["accuracy"]) == ["fr"]
    assert fr_only["accuracy"]["fr"] == pytest.approx(before["accuracy"]["fr"], abs=1e-9)
    assert markdown_table(tmp_path / "fr.md")["fr"] == pytest.approx(100 * before["accuracy"]["fr"], abs=0.051)
    assert "_(CROSS-LINGUAL TRANSFER)_" in (tmp_path / "fr.md").read_text(encoding="utf-8")

    # The new split is added beside the test results, which stay.
    splits = {
        (r.dataset_config, r.dataset_split)
        for r in ModelCard.load(os.path.join(finetuned, "README.md")).data.eval_results
    }
    assert {("fr", "validation"), ("en", "test"), ("fr", "test")} <= splits


def test_evaluate_writes_trainer_style_results_into_output_dir(finetuned, nli_files, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", finetuned, "--eval-file", nli_files["test_tsv"], "--output-dir", str(out)]) == 0
    before = read_json(os.path.join(finetuned, "nli_accuracy.json"))
    eval_results = read_json(out / "eval_results.json")
    assert read_json(out / "all_results.json") == eval_results
    assert read_json(out / "nli_accuracy.json")["accuracy"] == pytest.approx(before["accuracy"], abs=1e-9)
    assert eval_results["eval_accuracy_en"] == pytest.approx(before["accuracy"]["en"], abs=1e-9)
    assert eval_results["eval_samples"] == len(nli_files["test_rows"])


# ------------------------------------------------------------------------------------------ options


def test_training_options_reach_trainer(tiny_model_dir, nli_files, tmp_path):
    """Checkpointing, length grouping, bf16, accumulation and in-training per-language evaluation."""
    out = tmp_path / "options"
    status = main(
        finetune_args(
            tiny_model_dir,
            out,
            nli_files["train"],
            "--eval-file",
            nli_files["test_tsv"],
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--gradient-accumulation-steps",
            "2",
            "--gradient-checkpointing",
            "--group-by-length",
            "--bf16",
            "--eval-strategy",
            "steps",
            "--eval-steps",
            "2",
            "--save-strategy",
            "no",
            "--max-length",
            "16",
            "--warmup",
            "1",
            "--no-model-card",
            "--use-cpu",
        )
    )
    assert status == 0
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.activation_checkpointing and args.bf16 and args.gradient_accumulation_steps == 2
    assert args.train_sampling_strategy == "group_by_length" and args.warmup_steps == 1
    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == 2
    evals = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert len(evals) == 1 and {"eval_accuracy_en", "eval_accuracy_fr", "eval_accuracy_avg"} <= set(evals[0])
    assert evals[0]["eval_accuracy_avg"] == pytest.approx(
        (evals[0]["eval_accuracy_en"] + evals[0]["eval_accuracy_fr"]) / 2
    )
    assert not (out / "README.md").exists()
    assert os.path.exists(out / "nli_accuracy.json")


def test_evaluate_refuses_models_without_matching_labels(tiny_model_dir, finetuned, nli_files, capsys):
    # A pretrained (not fine-tuned) model has no label names: its head would be random.
    assert main(["evaluate", "--model", tiny_model_dir, "--eval-file", nli_files["test_tsv"]]) == 2
    assert "has no label names" in capsys.readouterr().err
    # Renaming labels must keep one name per trained output, never start a new head.
    assert main(["evaluate", "--model", finetuned, "--eval-file", nli_files["test_tsv"], "--labels", "yes,no"]) == 2
    assert "names 2 labels but" in capsys.readouterr().err
