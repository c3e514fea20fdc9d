"""`xlmr finetune`: several processes, resuming, and bad data stopping before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modeling_xlmr.cli import main
from tests.support.nli import finetune_args, predictions_of, read_json
from tests.support.processes import (
    REPO_ROOT,
    accelerate_launch_command,
    run_without_package,
)

# ------------------------------------------------------------------------------------------ 2. DDP


def test_accelerate_two_processes_and_remote_code_load(tiny_model_dir, nli_files, tmp_path):
    """Two DDP processes on the CPU through `accelerate launch`.

    accelerate 1.x starts a single process for `--cpu --num_processes 2` unless an MPI hostfile is given, so
    the torchrun-based launcher (`--multi_gpu`, which on a machine without GPUs runs gloo on the CPU) is used,
    with `--use-cpu` keeping the work on the CPU wherever the test runs.
    """
    out = tmp_path / "ddp"
    command = accelerate_launch_command(
        ["--multi_gpu", "--num_processes", "2"],
        finetune_args(
            tiny_model_dir,
            out,
            nli_files["train"],
            "--eval-file",
            nli_files["test_tsv"],
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--save-strategy",
            "steps",
            "--save-steps",
            "4",
            "--learning-rate",
            "1e-3",
            "--use-cpu",
        ),
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    # Two processes trained: each saved its own RNG state in the checkpoint.
    checkpoint = out / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    state = read_json(checkpoint / "trainer_state.json")
    assert state["global_step"] == 4
    # 240 English + 240 French pairs, 2 processes x 8 per step: 30 steps per epoch.
    assert state["epoch"] == pytest.approx(4 / 30)
    # Evaluation gathered every held-out pair exactly once across both processes.
    results = read_json(out / "nli_accuracy.json")
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
    common = [
        "--max-steps",
        "6",
        "--batch-size",
        "8",
        "--save-strategy",
        "steps",
        "--save-steps",
        "3",
        "--logging-steps",
        "1",
        "--learning-rate",
        "1e-3",
        "--seed",
        "3",
        "--use-cpu",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(finetune_args(tiny_model_dir, straight, [nli_files["small_train"]], *common)) == 0
    assert (
        main(
            finetune_args(
                tiny_model_dir,
                resumed,
                [nli_files["small_train"]],
                *common,
                "--resume-from-checkpoint",
                str(straight / "checkpoint-3"),
            )
        )
        == 0
    )

    # Restarting from step 0 would have saved checkpoint-3 again; continuing from 3 saves only checkpoint-6.
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-6"]
    state = read_json(resumed / "checkpoint-6" / "trainer_state.json")
    assert state["global_step"] == 6

    # And it continues the same run: steps 4-6 see the same batches and weights as the uninterrupted run.
    def losses(run):
        history = read_json(run / "checkpoint-6" / "trainer_state.json")["log_history"]
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
    "missing_column": (
        '{"premise": "a", "text_b": "b", "label": 0}\n',
        "has no hypothesis column",
        "--hypothesis-column",
    ),
    "label_out_of_range": (
        '{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a", "hypothesis": "b", "label": 3}\n',
        "row 2: label 3 is outside 0..2",
        "entailment",
    ),
    "unknown_label_name": (
        '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n',
        "label 'maybe' is not a known label",
        "--labels",
    ),
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


def test_too_long_max_length_is_caught_before_training(tiny_model_dir, nli_files, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(finetune_args(tiny_model_dir, out, [nli_files["small_train"]], "--max-length", "600"))
    assert status == 2 and "use at most 512" in capsys.readouterr().err
    assert not out.exists()


def test_bad_eval_file_is_caught_before_training_too(tiny_model_dir, nli_files, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        finetune_args(tiny_model_dir, out, [nli_files["small_train"]], "--eval-file", str(tmp_path / "nope.tsv"))
    )
    assert status == 2 and "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_cli_subprocess_reports_one_line(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"premise": "a", "hypothesis": "b", "label": -1}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "modeling_xlmr.cli", *finetune_args(tiny_model_dir, out, [str(data)])],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlmr finetune: error:") and "label -1" in lines[0], result.stderr
    assert not out.exists()
