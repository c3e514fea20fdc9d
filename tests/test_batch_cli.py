"""`xlmr extract` / `xlmr classify`: file formats, input order, clean errors, and Accelerate multi-process runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from modeling_xlmr import XLMRForSequenceClassification, XLMRHubInterface
from modeling_xlmr.cli import main
from tests.support.models import TEXTS, build_tiny_repo, fast_stock_tokenizer
from tests.support.processes import accelerate_launch_command

LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def repo(real_tokenizer_json, tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("cli_repo"), fast_stock_tokenizer(real_tokenizer_json))


@pytest.fixture(scope="module")
def classifier_repo(real_tokenizer_json, tmp_path_factory):
    return build_tiny_repo(
        tmp_path_factory.mktemp("cli_classifier"),
        fast_stock_tokenizer(real_tokenizer_json),
        XLMRForSequenceClassification,
        seed=5,
        num_labels=3,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
    )


@pytest.fixture(scope="module")
def expected_mean(repo) -> np.ndarray:
    return XLMRHubInterface.from_pretrained(str(repo)).embed(TEXTS, pooling="mean").numpy()


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def files_in(directory) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_extract_writes_npy_safetensors_and_jsonl_in_input_order(repo, texts_file, expected_mean, tmp_path):
    common = ["extract", "--model", str(repo), "--input", str(texts_file), "--pooling", "mean", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "out.npy"), "--max-tokens-per-batch", "40"]) == 0
    assert main([*common, "--output", str(tmp_path / "out.safetensors")]) == 0
    assert main([*common, "--output", str(tmp_path / "out.jsonl")]) == 0

    array = np.load(tmp_path / "out.npy")
    assert array.dtype == np.float32 and array.shape == (len(TEXTS), 32)  # the empty line is a text too
    np.testing.assert_allclose(array, expected_mean, atol=1e-6)
    np.testing.assert_allclose(load_file(tmp_path / "out.safetensors")["embeddings"], expected_mean, atol=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected_mean, atol=1e-6)
    assert files_in(tmp_path) == {"texts.txt", "out.npy", "out.safetensors", "out.jsonl"}  # no temp files left
    assert oct(os.stat(tmp_path / "out.npy").st_mode & 0o777) != oct(0o600)  # a normal file, not mkstemp's mode


def test_jsonl_input_with_field_and_ids_and_stdin(repo, expected_mean, tmp_path, monkeypatch):
    records = [{"doc": f"d{index}", "body": text, "other": 1} for index, text in enumerate(TEXTS)]
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    lines.insert(3, "")  # blank lines are skipped
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(lines), encoding="utf-8")
    output = tmp_path / "vectors.jsonl"
    argv = [
        "extract",
        "--model",
        str(repo),
        "--input",
        str(source),
        "--field",
        "body",
        "--id-field",
        "doc",
        "--output",
        str(output),
        "--pooling",
        "mean",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["doc"] for row in rows] == [f"d{index}" for index in range(len(TEXTS))]
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected_mean, atol=1e-6)

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS)))
    assert (
        main(
            [
                "extract",
                "--model",
                str(repo),
                "--input",
                "-",
                "--output",
                str(tmp_path / "stdin.npy"),
                "--pooling",
                "mean",
                "--no-progress",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "stdin.npy"), expected_mean, atol=1e-6)


def test_classify_writes_labels_scores_and_probabilities(classifier_repo, texts_file, tmp_path):
    output = tmp_path / "labels.jsonl"
    assert (
        main(
            [
                "classify",
                "--model",
                str(classifier_repo),
                "--input",
                str(texts_file),
                "--output",
                str(output),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    model = XLMRForSequenceClassification.from_pretrained(classifier_repo).eval()
    tokenizer = XLMRHubInterface.from_pretrained(str(classifier_repo)).tokenizer
    assert len(rows) == len(TEXTS)
    for text, row in zip(TEXTS, rows):
        with torch.no_grad():
            expected = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        assert row["label"] == LABELS[int(expected.argmax())]
        assert row["score"] == pytest.approx(float(expected.max()), abs=1e-5)
        assert list(row["probabilities"]) == list(LABELS.values())


ERROR_CASES = {
    "missing model": (lambda d, repo: ["--model", str(d / "no-such-model")], "not found"),
    "model is a file": (lambda d, repo: ["--model", str(d / "texts.txt")], "is a file"),
    "unreadable input": (lambda d, repo: ["--input", str(d / "missing.txt")], "cannot read input"),
    "binary input": (lambda d, repo: ["--input", str(d / "binary.txt")], "UTF-8"),
    "bad dtype": (lambda d, repo: ["--dtype", "fp8"], "unsupported dtype 'fp8'.*fp16.*bf16"),
    "bad output suffix": (lambda d, repo: ["--output", str(d / "out.csv")], "must end with .npy"),
    "missing output directory": (lambda d, repo: ["--output", str(d / "nowhere" / "out.npy")], "does not exist"),
    "missing jsonl field": (lambda d, repo: ["--input", str(d / "docs.jsonl")], "no text field 'text'.*--field"),
    "text too long": (lambda d, repo: ["--input", str(d / "long.txt")], r"text 1 has \d+ tokens"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_print_one_line_exit_2_and_leave_no_output(case, repo, texts_file, tmp_path, capsys):
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "docs.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    (tmp_path / "long.txt").write_text("short\n" + "word " * 700 + "\n", encoding="utf-8")
    make_options, message = ERROR_CASES[case]
    options = {"--model": str(repo), "--input": str(texts_file), "--output": str(tmp_path / "out.npy")}
    extra = make_options(tmp_path, repo)
    options.update(dict(zip(extra[::2], extra[1::2])))
    before = files_in(tmp_path)
    capsys.readouterr()

    status = main(["extract", *[item for pair in options.items() for item in pair], "--no-progress"])

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlmr extract: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert files_in(tmp_path) == before  # no output, no temp file


def test_a_failed_run_keeps_the_previous_output_intact(repo, tmp_path, capsys):
    output = tmp_path / "out.npy"
    np.save(output, np.zeros(3, dtype=np.float32))
    (tmp_path / "long.txt").write_text("word " * 700, encoding="utf-8")
    assert main(["extract", "--model", str(repo), "--input", str(tmp_path / "long.txt"), "--output", str(output)]) == 2
    np.testing.assert_array_equal(np.load(output), np.zeros(3, dtype=np.float32))
    assert files_in(tmp_path) == {"out.npy", "long.txt"}


def test_console_script_error_is_one_line_on_stderr(tmp_path):
    (tmp_path / "t.txt").write_text("hi\n")
    result = subprocess.run(
        [
            "xlmr",
            "extract",
            "--model",
            str(tmp_path / "absent"),
            "--input",
            str(tmp_path / "t.txt"),
            "--output",
            str(tmp_path / "o.npy"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"xlmr extract: error: cannot load model: {tmp_path / 'absent'} not found: no such directory, "
        "and not a Hub id of the form 'owner/name'."
    ]
    assert not (tmp_path / "o.npy").exists()


def _accelerate(
    launch_options: list[str], repo, source, output, cwd, check: bool = True
) -> subprocess.CompletedProcess:
    command = accelerate_launch_command(
        launch_options,
        [
            "extract",
            "--model",
            str(repo),
            "--input",
            str(source),
            "--output",
            str(output),
            "--pooling",
            "mean",
            "--no-progress",
            "--max-tokens-per-batch",
            "64",
        ],
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_accelerate_launch_two_processes_write_the_single_process_output(repo, tmp_path, expected_mean):
    source = tmp_path / "texts.txt"
    texts = TEXTS * 3  # 27 texts: uneven split between 2 processes
    source.write_text("\n".join(texts), encoding="utf-8")
    expected = np.concatenate([expected_mean] * 3)

    # torchrun-style launch: two real processes on the CPU (gloo), each takes a contiguous slice.
    two = _accelerate(["--multi_gpu", "--num_processes", "2"], repo, source, tmp_path / "two.npy", tmp_path)
    assert "process 0/2 takes texts 0..13 of 27" in two.stderr
    assert "process 1/2 takes texts 14..26 of 27" in two.stderr
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), expected, atol=1e-6)

    # The literal `accelerate launch --cpu` command. accelerate 1.x starts ONE process for `--cpu` without an MPI hostfile
    # (huggingface/accelerate#2741), so it must simply produce the same rows (batches differ: 1e-6).
    _accelerate(["--cpu", "--num_processes", "2"], repo, source, tmp_path / "cpu.npy", tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "two.npy"), atol=1e-6)
    assert files_in(tmp_path) == {"texts.txt", "two.npy", "cpu.npy"}


@pytest.mark.slow
def test_an_error_in_one_process_stops_both_and_names_the_text_by_its_input_index(repo, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("one\ntwo\nthree\n" + "word " * 700 + "\n", encoding="utf-8")  # text 3 is in process 1's slice
    result = _accelerate(
        ["--multi_gpu", "--num_processes", "2"], repo, source, tmp_path / "out.npy", tmp_path, check=False
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("xlmr extract: error:")]
    assert errors == [errors[0]] and "text 3 has 703 tokens" in errors[0]  # reported once, by the main process
    assert files_in(tmp_path) == {"texts.txt"}
