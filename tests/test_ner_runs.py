"""`xlmr finetune --task ner` under `accelerate launch` with LoRA and bf16, then resumed from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from modeling_xlmr.cli import main
from tests.support.ner import read_jsonl, sentences, write_jsonl
from tests.support.processes import REPO_ROOT, accelerate_launch_command


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def test_two_processes_lora_bf16_then_resume(tiny_model_dir, tmp_path):
    """Two DDP processes on the CPU (torchrun-based `--multi_gpu`, as for NLI), LoRA adapters on query/value,
    bf16 autocast, a checkpoint every 2 steps; then a single process resumes from step 2 to step 4."""
    train = write_jsonl(tmp_path / "train.jsonl", sentences(64, seed=0))
    held_back = sentences(31, seed=1)  # odd: evaluation must drop DDP's padding duplicates
    test = write_jsonl(tmp_path / "test.jsonl", held_back)
    common = ["finetune", "--task", "ner", "--model", tiny_model_dir, "--train-file", train]
    common += ["--max-steps", "4", "--batch-size", "8", "--save-strategy", "steps", "--save-steps", "2"]
    common += ["--learning-rate", "1e-2", "--max-length", "32", "--stride", "8", "--use-cpu"]
    common += ["--lora", "--lora-rank", "4", "--lora-alpha", "8", "--bf16"]
    out = tmp_path / "ddp"
    command = accelerate_launch_command(
        ["--multi_gpu", "--num_processes", "2"], [*common, "--output-dir", str(out), "--eval-file", test]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert read_json(out / "trainer_state.json")["global_step"] == 4
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.bf16 and args.world_size == 2
    # every held-back sentence predicted once, one tag per word
    saved = read_jsonl(out / "eval_predictions.jsonl")
    assert [row["words"] for row in saved] == [row["tokens"] for row in held_back]
    assert "eval_f1" in read_json(out / "eval_results.json")

    # adapters alone, and merged into a plain model that loads without peft and computes the same
    from peft import PeftModel

    from modeling_xlmr import XLMRForTokenClassification

    adapter_config = read_json(out / "adapter" / "adapter_config.json")
    assert adapter_config["r"] == 4 and set(adapter_config["target_modules"]) == {"query", "value"}
    merged = XLMRForTokenClassification.from_pretrained(str(out)).eval()
    assert not any("lora" in name for name in merged.state_dict())
    base = XLMRForTokenClassification.from_pretrained(tiny_model_dir, num_labels=merged.config.num_labels)
    adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    batch = torch.tensor([[0, 35378, 8999, 38, 2]])
    with torch.no_grad():
        torch.testing.assert_close(merged(batch).logits, adapted(batch).logits, atol=1e-5, rtol=1e-4)
    pretrained = XLMRForTokenClassification.from_pretrained(tiny_model_dir, num_labels=merged.config.num_labels)
    query = "roberta.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(merged.state_dict()[query], pretrained.state_dict()[query])  # the adapters are merged in

    # resume: one process continues the two-process run from step 2 (LoRA and bf16 as before)
    resumed = tmp_path / "resumed"
    status = main([*common, "--output-dir", str(resumed), "--resume-from-checkpoint", str(checkpoint)])
    assert status == 0
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-4"]
    assert read_json(resumed / "trainer_state.json")["global_step"] == 4
    assert (resumed / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--stride", "200"], "--stride 200 must be"),
        (["--lora", "--lora-rank", "0"], "--lora-rank must be at least 1"),
        (["--lora", "--lora-target-modules", "nothing_here"], "--lora-target-modules"),
    ],
)
def test_bad_options_are_one_line(tiny_model_dir, tmp_path, capsys, options, message):
    train = write_jsonl(tmp_path / "train.jsonl", sentences(4, seed=0))
    out = tmp_path / "out"
    args = ["finetune", "--task", "ner", "--model", tiny_model_dir, "--output-dir", str(out), "--train-file", train]
    assert main([*args, "--max-steps", "1", "--save-strategy", "no", "--use-cpu", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("xlmr finetune: error:")]
    assert len(errors) == 1 and message in errors[0] and errors[0] == err[-1], err
