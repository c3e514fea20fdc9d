"""`xlmr demo`: the whole pipeline offline (fairseq checkpoint -> convert -> remote-code load -> features -> labels)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from modeling_xlmr.cli import main
from modeling_xlmr.cli.demo import LABELS, SENTENCES


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "kept"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["demo", "--output-dir", str(workdir)])
    return status, stdout.getvalue(), workdir


def test_demo_runs_every_step_and_keeps_the_files(demo_run):
    status, output, workdir = demo_run
    assert status == 0
    for step in range(1, 6):
        assert f"[{step}/5]" in output
    assert {"model.pt", "dict.txt", "sentencepiece.bpe.model"} <= {p.name for p in (workdir / "fairseq").iterdir()}
    repo_files = {p.name for p in (workdir / "xlmr-tiny").iterdir()}
    assert {"config.json", "model.safetensors", "classification_heads.safetensors", "tokenizer.json"} <= repo_files
    assert re.search(r"XLMRModel from transformers_modules\.", output)  # the repo's own (remote) code
    assert re.search(r"last_hidden_state \(6, \d+, 32\)", output)
    assert "extract_features(..., return_all_hiddens=True): 3 x (1, " in output


def test_demo_labels_are_what_the_converted_classifier_says(demo_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, output, workdir = demo_run
    repo = workdir / "xlmr-tiny"
    model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    printed = dict(re.findall(r"^ +(\w\w): (\w+ \(\d\.\d{3}\))$", output, flags=re.MULTILINE))
    assert set(printed) == set(SENTENCES)
    for language, text in SENTENCES.items():
        with torch.no_grad():
            probabilities = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        best = int(probabilities.argmax())
        assert printed[language] == f"{LABELS[best]} ({float(probabilities[best]):.3f})"


def test_demo_refuses_a_non_empty_output_dir(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["demo", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"xlmr demo: error: --output-dir {tmp_path} is not empty; pass a new or empty directory."
    ]
