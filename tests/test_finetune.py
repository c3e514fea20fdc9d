"""`xlmr finetune` / `xlmr evaluate` (issue 5): a tiny random XLM-R learns a synthetic NLI rule.

The synthetic task has a rule a model must read both sentences for, in two "languages":
the hypothesis repeats the premise (entailment), adds a cause the premise does not state (neutral), or
denies it ("it is not true that ..." / "il est faux que ...": contradiction). Held-out pairs come from
a different random stream. Accuracies are checked against predictions recomputed here from the saved
model, not against numbers the command reports about itself.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO_ROOT, run_without_package

from modeling_xlmr.cli import main

LEXICON = {
    "en": dict(
        subjects=["the cat", "the dog", "my brother", "the teacher", "a farmer", "the child", "our neighbour", "the doctor"],
        verbs=["sees", "likes", "paints", "finds", "calls", "follows", "helps", "visits"],
        objects=["the house", "a bird", "the river", "a friend", "the garden", "the car", "a horse", "the city"],
        denial="it is not true that ",
        cause=" because it rains",
    ),
    "fr": dict(
        subjects=["le chat", "le chien", "mon frère", "le professeur", "un fermier", "l'enfant", "notre voisin", "le médecin"],
        verbs=["voit", "aime", "peint", "trouve", "appelle", "suit", "aide", "visite"],
        objects=["la maison", "un oiseau", "la rivière", "un ami", "le jardin", "la voiture", "un cheval", "la ville"],
        denial="il est faux que ",
        cause=" parce qu'il pleut",
    ),
}
LABELS = ("entailment", "neutral", "contradiction")


def synthetic_pairs(count: int, seed: int, languages=("en", "fr")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        language = languages[index % len(languages)]
        words = LEXICON[language]
        premise = " ".join(rng.choice(words[part]) for part in ("subjects", "verbs", "objects"))
        label = rng.randrange(3)
        hypothesis = [premise, premise + words["cause"], words["denial"] + premise][label]
        rows.append({"premise": premise, "hypothesis": hypothesis, "label": label, "language": language})
    return rows


def write_jsonl(path, rows, drop=()) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps({k: v for k, v in row.items() if k not in drop}, ensure_ascii=False) + "\n")
    return str(path)


def write_xnli_tsv(path, rows) -> str:
    """XNLI-1.0's dev/test layout: a language column, label names in gold_label, the texts in sentence1/2."""
    header = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre"]
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
        writer.writerow(header)
        for index, row in enumerate(rows):
            p, h = row["premise"], row["hypothesis"]
            writer.writerow([row["language"], LABELS[row["label"]], f"( {p} )", f"( {h} )", f"(ROOT {p})",
                             f"(ROOT {h})", p, h, index, f"{index}n", "synthetic"])
    return str(path)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, real_tokenizer) -> str:
    """A random 'pretrained' XLM-R (masked-LM head, as a converted repo) with the real 250002-piece tokenizer.

    One layer and no dropout: with the real vocabulary the 8M-entry embedding dominates each step's cost,
    and this shape learns the rule within ~60 steps for every seed we tried (two layers sometimes plateau).
    """
    from modeling_xlmr import XLMRConfig, XLMRForMaskedLM

    directory = tmp_path_factory.mktemp("tiny_xlmr")
    torch.manual_seed(0)
    config = XLMRConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    XLMRForMaskedLM(config).save_pretrained(directory)
    real_tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def nli_files(tmp_path_factory) -> dict:
    """Training data as Hub-xnli-schema jsonl (one file per language, tagged LANG=PATH), held-out data as
    an XNLI-1.0 tsv with a language column."""
    directory = tmp_path_factory.mktemp("nli_data")
    train = synthetic_pairs(480, seed=0)
    held_out = synthetic_pairs(301, seed=1)  # odd: DDP evaluation must drop its padding duplicates
    return {
        "train": [
            f"{lang}=" + write_jsonl(directory / f"train.{lang}.jsonl", [r for r in train if r["language"] == lang],
                                     drop=("language",))
            for lang in ("en", "fr")
        ],
        "test_tsv": write_xnli_tsv(directory / "xnli.test.tsv", held_out),
        "test_rows": held_out,
        "small_train": write_jsonl(directory / "small.jsonl", train[:64]),
    }


def finetune_args(model, out, train, *extra) -> list[str]:
    return ["finetune", "--model", model, "--output-dir", str(out), "--train-file", *train, *extra]


def markdown_table(path) -> dict[str, float]:
    """Read the markdown table back: header languages -> the row's percentages."""
    lines = [line for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert lines[1].replace("|", "").replace("-", "") == ""
    row = [cell.strip() for cell in lines[2].split("|")]
    assert header[0] == "Model" and len(row) == len(header)
    return {lang: float(value) for lang, value in zip(header[1:], row[1:])}


def predictions_of(model_dir, rows, remote: bool = True) -> list[int]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote).eval()
    batch = tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows], padding=True,
                      return_token_type_ids=False, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.argmax(-1).tolist()


# ------------------------------------------------------------------------------------------ 1. it learns


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, nli_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned") / "tiny-nli"
    started = time.perf_counter()
    status = main(finetune_args(
        tiny_model_dir, out, nli_files["train"], "--eval-file", nli_files["test_tsv"],
        "--learning-rate", "1e-2", "--num-train-epochs", "4", "--batch-size", "32", "--weight-decay", "0",
        "--save-strategy", "no", "--seed", "0", "--use-cpu",
    ))
    seconds = time.perf_counter() - started
    print(f"\nfine-tuning + evaluation took {seconds:.1f}s")
    assert status == 0
    return str(out)


def test_finetune_learns_rule_in_each_language(finetuned, nli_files):
    results = json.load(open(os.path.join(finetuned, "nli_accuracy.json")))
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

    config = json.load(open(os.path.join(finetuned, "config.json")))
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}


def test_model_card_holds_model_index_results(finetuned):
    from huggingface_hub import ModelCard

    results = json.load(open(os.path.join(finetuned, "nli_accuracy.json")))
    card = ModelCard.load(os.path.join(finetuned, "README.md"))
    found = {(r.dataset_type, r.dataset_config, r.dataset_split): r.metric_value for r in card.data.eval_results}
    assert found[("xnli", "en", "test")] == pytest.approx(results["accuracy"]["en"], abs=1e-4)
    assert found[("xnli", "fr", "test")] == pytest.approx(results["accuracy"]["fr"], abs=1e-4)
    assert found[("xnli", None, "test")] == pytest.approx(results["average"], abs=1e-4)
    assert all(r.metric_type == "accuracy" and r.task_type == "text-classification" for r in card.data.eval_results)


def test_evaluate_command_reproduces_and_updates_card(finetuned, nli_files, tmp_path):
    from huggingface_hub import ModelCard

    before = json.load(open(os.path.join(finetuned, "nli_accuracy.json")))
    status = main([
        "evaluate", "--model", finetuned, "--eval-file", nli_files["test_tsv"], "--eval-languages", "fr",
        "--results-json", str(tmp_path / "fr.json"), "--results-markdown", str(tmp_path / "fr.md"),
        "--update-model-card", "--eval-split", "validation", "--setting", "cross-lingual transfer",
    ])
    assert status == 0
    fr_only = json.load(open(tmp_path / "fr.json"))
    assert list(fr_only["accuracy"]) == ["fr"]
    assert fr_only["accuracy"]["fr"] == pytest.approx(before["accuracy"]["fr"], abs=1e-9)
    assert markdown_table(tmp_path / "fr.md")["fr"] == pytest.approx(100 * before["accuracy"]["fr"], abs=0.051)
    assert "_(CROSS-LINGUAL TRANSFER)_" in open(tmp_path / "fr.md").read()

    # The new split is added beside the test results, which stay.
    splits = {(r.dataset_config, r.dataset_split) for r in ModelCard.load(os.path.join(finetuned, "README.md")).data.eval_results}
    assert {("fr", "validation"), ("en", "test"), ("fr", "test")} <= splits


# ------------------------------------------------------------------------------------------ 2. DDP


def test_accelerate_two_processes_and_remote_code_load(tiny_model_dir, nli_files, tmp_path):
    """Two DDP processes on the CPU through `accelerate launch`.

    accelerate 1.x starts a single process for `--cpu --num_processes 2` unless an MPI hostfile is given, so
    the torchrun-based launcher (`--multi_gpu`, which on a machine without GPUs runs gloo on the CPU) is used,
    with `--use-cpu` keeping the work on the CPU wherever the test runs.
    """
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "modeling_xlmr.cli", *finetune_args(
            tiny_model_dir, out, nli_files["train"], "--eval-file", nli_files["test_tsv"], "--max-steps", "4",
            "--batch-size", "8", "--save-strategy", "steps", "--save-steps", "4", "--learning-rate", "1e-3",
            "--use-cpu",
        ),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    # Two processes trained: each saved its own RNG state in the checkpoint.
    checkpoint = out / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    state = json.load(open(checkpoint / "trainer_state.json"))
    assert state["global_step"] == 4
    # 240 English + 240 French pairs, 2 processes x 8 per step: 30 steps per epoch.
    assert state["epoch"] == pytest.approx(4 / 30)
    # Evaluation gathered every held-out pair exactly once across both processes.
    results = json.load(open(out / "nli_accuracy.json"))
    assert sum(results["examples"].values()) == len(nli_files["test_rows"])

    # The output loads through remote code alone, in a process that cannot import this repository.
    rows = nli_files["test_rows"][:6]
    expected = predictions_of(str(out), rows, remote=False)  # stock XLMRoberta* reading the same files
    loaded = run_without_package(f"""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "XLMRForSequenceClassification"
        tokenizer = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)
        batch = tokenizer({[r["premise"] for r in rows]!r}, {[r["hypothesis"] for r in rows]!r}, padding=True,
                          return_token_type_ids=False, return_tensors="pt")
        with torch.no_grad():
            print(model(**batch).logits.argmax(-1).tolist())
        print(model.config.id2label[2])
    """)
    lines = loaded.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == expected
    assert lines[-1] == "contradiction"


# ------------------------------------------------------------------------------------------ 3. resume


def test_resume_continues_from_checkpoint_step(tiny_model_dir, nli_files, tmp_path):
    common = ["--max-steps", "6", "--batch-size", "8", "--save-strategy", "steps", "--save-steps", "3",
              "--logging-steps", "1", "--learning-rate", "1e-3", "--seed", "3", "--use-cpu"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(finetune_args(tiny_model_dir, straight, [nli_files["small_train"]], *common)) == 0
    assert main(finetune_args(tiny_model_dir, resumed, [nli_files["small_train"]], *common,
                              "--resume-from-checkpoint", str(straight / "checkpoint-3"))) == 0

    # Restarting from step 0 would have saved checkpoint-3 again; continuing from 3 saves only checkpoint-6.
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-6"]
    state = json.load(open(resumed / "checkpoint-6" / "trainer_state.json"))
    assert state["global_step"] == 6

    # And it continues the same run: steps 4-6 see the same batches and weights as the uninterrupted run.
    def losses(run):
        history = json.load(open(run / "checkpoint-6" / "trainer_state.json"))["log_history"]
        return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}

    assert [losses(resumed)[step] for step in (4, 5, 6)] == pytest.approx(
        [losses(straight)[step] for step in (4, 5, 6)], rel=1e-4
    )


def test_resume_latest_without_checkpoint_is_an_error(tiny_model_dir, nli_files, tmp_path, capsys):
    out = tmp_path / "nothing-yet"
    status = main(finetune_args(tiny_model_dir, out, [nli_files["small_train"]], "--resume-from-checkpoint", "latest"))
    assert status == 2
    assert "No checkpoint-N directory" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ 4. bad data


BAD_DATA = {
    "missing_column": ('{"premise": "a", "text_b": "b", "label": 0}\n', "has no hypothesis column", "--hypothesis-column"),
    "label_out_of_range": ('{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a", "hypothesis": "b", "label": 3}\n',
                           "row 2: label 3 is outside 0..2", "entailment"),
    "unknown_label_name": ('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n', "label 'maybe' is not a known label", "--labels"),
    "empty_file": ("", "has no rows", "premise/hypothesis/label"),
    "header_only_csv": ("premise,hypothesis,label\n", "has no rows", "premise/hypothesis/label"),
    "missing_text": ('{"premise": null, "hypothesis": "b", "label": 0}\n', "row 1 has no premise", "drop the row"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_stops_before_training(case, tiny_model_dir, tmp_path, capsys):
    content, problem, fix = BAD_DATA[case]
    data = tmp_path / ("data.csv" if case.endswith("csv") else "data.jsonl")
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    status = main(finetune_args(tiny_model_dir, out, [str(data)]))
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert problem in err and fix in err, err
    assert not out.exists()


def test_bad_eval_file_is_caught_before_training_too(tiny_model_dir, nli_files, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(finetune_args(tiny_model_dir, out, [nli_files["small_train"]], "--eval-file", str(tmp_path / "nope.tsv")))
    assert status == 2 and "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_cli_subprocess_reports_one_line(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"premise": "a", "hypothesis": "b", "label": -1}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "modeling_xlmr.cli", *finetune_args(tiny_model_dir, out, [str(data)])],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlmr finetune: error:") and "label -1" in lines[0], result.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------------ options


def test_training_options_reach_trainer(tiny_model_dir, nli_files, tmp_path):
    """Checkpointing, length grouping, bf16, accumulation and in-training per-language evaluation."""
    out = tmp_path / "options"
    status = main(finetune_args(
        tiny_model_dir, out, nli_files["train"], "--eval-file", nli_files["test_tsv"], "--max-steps", "2",
        "--batch-size", "8", "--gradient-accumulation-steps", "2", "--gradient-checkpointing", "--group-by-length",
        "--bf16", "--eval-strategy", "steps", "--eval-steps", "2", "--save-strategy", "no", "--max-length", "16",
        "--warmup", "1", "--no-model-card", "--use-cpu",
    ))
    assert status == 0
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.activation_checkpointing and args.bf16 and args.gradient_accumulation_steps == 2
    assert args.train_sampling_strategy == "group_by_length" and args.warmup_steps == 1
    state = json.load(open(out / "trainer_state.json"))
    assert state["global_step"] == 2
    evals = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert len(evals) == 1 and {"eval_accuracy_en", "eval_accuracy_fr", "eval_accuracy_avg"} <= set(evals[0])
    assert evals[0]["eval_accuracy_avg"] == pytest.approx((evals[0]["eval_accuracy_en"] + evals[0]["eval_accuracy_fr"]) / 2)
    assert not (out / "README.md").exists()
    assert os.path.exists(out / "nli_accuracy.json")
