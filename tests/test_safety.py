"""What a careless or hostile input must never do: run a repo's code unasked, delete what the user did not
name, misalign a row, pass NaN off as verified, or end in a traceback. Each case goes through the CLI or
the public API, as a user would meet it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion.synthetic import pack_fairseq_archive
from conversion.verification import VerificationReport, max_abs_difference
from modeling_xlmr import XLMRForSequenceClassification, XLMRHubInterface
from modeling_xlmr.configuration_xlmr import remote_code_files
from tests.support.cli import assert_nothing_written, assert_one_line_error, run_xlmr
from tests.support.models import build_tiny_repo
from tests.support.processes import REPO_ROOT

LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}


def marker_code(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('this code ran')\n"


@pytest.fixture(scope="module")
def classifier_repo(real_tokenizer, tmp_path_factory) -> Path:
    """A tiny sequence classifier of this package's format, saved with its (real-vocabulary) tokenizer."""
    return build_tiny_repo(
        tmp_path_factory.mktemp("classifier"),
        real_tokenizer,
        XLMRForSequenceClassification,
        num_labels=3,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
    )


@pytest.fixture
def tampered_repo(classifier_repo, tmp_path) -> tuple[Path, Path]:
    """This package's format, but every saved .py first writes a marker file: loading must not run them."""
    repo, marker = tmp_path / "tampered", tmp_path / "marker"
    shutil.copytree(classifier_repo, repo)
    for name in remote_code_files():
        (repo / name).write_text((repo / name).read_text(encoding="utf-8") + marker_code(marker), encoding="utf-8")
    return repo, marker


@pytest.fixture
def foreign_code_repo(classifier_repo, tmp_path) -> tuple[Path, Path]:
    """A repo whose tokenizer is somebody else's code (tokenization_evil.py), which writes a marker."""
    repo, marker = tmp_path / "foreign", tmp_path / "marker"
    shutil.copytree(classifier_repo, repo)
    for name in remote_code_files():
        (repo / name).unlink()
    (repo / "tokenization_evil.py").write_text(
        marker_code(marker)
        + "from transformers import XLMRobertaTokenizerFast\n\n\nclass EvilTokenizer(XLMRobertaTokenizerFast):\n"
        "    pass\n",
        encoding="utf-8",
    )
    config = json.loads((repo / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(
        tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    )
    (repo / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return repo, marker


@pytest.fixture(scope="module")
def nli_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nli") / "pairs.jsonl"
    rows = [{"premise": "a cat sleeps", "hypothesis": "a cat sleeps", "label": index % 3} for index in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def every_command(repo: Path, tmp_path: Path, nli_file: Path) -> dict[str, list]:
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello world!\nBonjour le monde !\n", encoding="utf-8")
    return {
        "extract": ["extract", "--model", repo, "--input", texts, "--output", tmp_path / "vectors.npy", "--no-progress"],
        "classify": ["classify", "--model", repo, "--input", texts, "--output", tmp_path / "labels.jsonl", "--no-progress"],
        "finetune": [
            "finetune", "--model", repo, "--output-dir", tmp_path / "finetuned", "--train-file", nli_file,
            "--max-steps", "1", "--save-strategy", "no", "--use-cpu", "--no-model-card",
        ],
        "evaluate": ["evaluate", "--model", repo, "--eval-file", nli_file, "--use-cpu"],
    }  # fmt: skip


# ------------------------------------------------------------------------------- 1. code execution


def test_no_subcommand_and_no_interface_runs_a_repos_own_files(tampered_repo, tmp_path, nli_file, capsys):
    repo, marker = tampered_repo
    for name, arguments in every_command(repo, tmp_path, nli_file).items():
        status, stderr = run_xlmr(capsys, *arguments)
        assert status == 0, (name, stderr)
        assert not marker.exists(), f"xlmr {name} ran the repo's code"
    xlmr = XLMRHubInterface.from_pretrained(str(repo))
    assert xlmr.encode("Hello world!").tolist() == [0, 35378, 8999, 38, 2]
    assert not marker.exists()
    # The check can fail: a remote-code load does run the tampered files.
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(repo), trust_remote_code=True)
    assert marker.exists()


def test_a_foreign_tokenizer_runs_only_with_trust_remote_code(foreign_code_repo, tmp_path, nli_file, capsys):
    repo, marker = foreign_code_repo
    for name, arguments in every_command(repo, tmp_path, nli_file).items():
        status, stderr = run_xlmr(capsys, *arguments)
        assert_one_line_error(status, stderr, "tokenization_evil.py", "--trust-remote-code", command=name)
        assert not marker.exists(), f"xlmr {name} ran the repo's code"
    with pytest.raises(ValueError, match=r"tokenization_evil\.py.*trust_remote_code=True"):
        XLMRHubInterface.from_pretrained(str(repo))
    assert not marker.exists()

    arguments = every_command(repo, tmp_path, nli_file)["extract"]
    status, stderr = run_xlmr(capsys, *arguments, "--trust-remote-code")
    assert status == 0, stderr
    assert marker.exists()  # asked for, so it ran


# ------------------------------------------------------------------------------- 2. what --overwrite touches


def test_convert_refuses_outputs_that_would_destroy_the_source(tmp_path, fairseq_checkpoint, capsys):
    source = fairseq_checkpoint("xlmr.base")
    archive = pack_fairseq_archive(source, tmp_path / "xlmr.base.tar.gz")
    before = sorted(path.name for path in tmp_path.rglob("*"))
    cases = [
        (source, source, "is the source itself"),
        (source, tmp_path, "contains the source"),
        (source, source / "converted", "lies inside the source"),
        (archive, archive, "is the source itself"),
        (archive, tmp_path, "contains the source"),
    ]
    for src, out, fragment in cases:
        status, stderr = run_xlmr(capsys, "convert", src, out, "--overwrite")
        assert_one_line_error(status, stderr, fragment)
    assert sorted(path.name for path in tmp_path.rglob("*")) == before


def test_overwrite_replaces_only_its_own_output(tmp_path, fairseq_checkpoint, capsys):
    source, output = fairseq_checkpoint(), tmp_path / "out"
    assert run_xlmr(capsys, "convert", source, output)[0] == 0
    (output / "notes.txt").write_text("mine", encoding="utf-8")
    (output / "experiments").mkdir()
    status, stderr = run_xlmr(capsys, "convert", source, output, "--overwrite")
    assert_one_line_error(status, stderr, "notes.txt", "--force")
    assert (output / "notes.txt").read_text(encoding="utf-8") == "mine"

    status, stderr = run_xlmr(capsys, "convert", source, output, "--overwrite", "--force")
    assert status == 0, stderr
    assert (output / "notes.txt").read_text(encoding="utf-8") == "mine" and (output / "experiments").is_dir()
    assert (output / "model.safetensors").is_file()


def test_finetune_refuses_to_write_over_its_model_or_a_used_directory(tiny_model_dir, nli_file, tmp_path, capsys):
    model_files = sorted(os.listdir(tiny_model_dir))
    status, stderr = run_xlmr(capsys, "finetune", "--model", tiny_model_dir, "--output-dir", tiny_model_dir,
                              "--train-file", nli_file)  # fmt: skip
    assert_one_line_error(status, stderr, "is the model directory", command="finetune")
    assert sorted(os.listdir(tiny_model_dir)) == model_files

    used = tmp_path / "used"
    used.mkdir()
    (used / "results.csv").write_text("keep me", encoding="utf-8")
    status, stderr = run_xlmr(
        capsys, "finetune", "--model", tiny_model_dir, "--output-dir", used, "--train-file", nli_file
    )
    assert_one_line_error(status, stderr, "is not empty", "--overwrite-output-dir", command="finetune")
    assert os.listdir(used) == ["results.csv"]


def test_staging_left_by_a_killed_conversion_is_cleaned_by_the_next_one(tmp_path, fairseq_checkpoint, capsys):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)  # that process has exited
    abandoned = [
        tmp_path / f".out.partial-{dead_pid}-abcd",
        tmp_path / f".out.source-{dead_pid}-efgh",
        tmp_path / ".out.partial-k2j3h4x_",  # named by an earlier version, without a process id
    ]
    in_use = tmp_path / f".out.partial-{os.getpid()}-live"  # a live process's: not ours to remove
    for directory in [*abandoned, in_use]:
        directory.mkdir()
        (directory / "model.pt").write_bytes(b"half written")
    assert run_xlmr(capsys, "convert", fairseq_checkpoint(), tmp_path / "out")[0] == 0
    assert not any(directory.exists() for directory in abandoned)
    assert in_use.exists()


# ------------------------------------------------------------------------------- 3. one text per line


def test_one_text_per_line_means_split_on_newline_only(classifier_repo, tmp_path, capsys):
    texts = ["a\u2028b", "c\u0085d", "e\x0cf", "g\x0bh", "i\u2029j", "plain"]
    txt = tmp_path / "texts.txt"
    txt.write_bytes(("\n".join(texts[:3]) + "\r\n" + "\n".join(texts[3:]) + "\n").encode("utf-8"))
    status, stderr = run_xlmr(capsys, "extract", "--model", classifier_repo, "--input", txt, "--output",
                              tmp_path / "v.npy", "--no-progress")  # fmt: skip
    assert status == 0, stderr
    vectors = np.load(tmp_path / "v.npy")
    expected = XLMRHubInterface.from_pretrained(str(classifier_repo)).embed(texts).numpy()
    assert vectors.shape[0] == len(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert "\u2028" in jsonl.read_text(encoding="utf-8")  # raw, as json.dumps(ensure_ascii=False) writes it
    status, stderr = run_xlmr(capsys, "extract", "--model", classifier_repo, "--input", jsonl, "--output",
                              tmp_path / "j.npy", "--no-progress")  # fmt: skip
    assert status == 0, stderr
    np.testing.assert_allclose(np.load(tmp_path / "j.npy"), expected, atol=1e-5)


# ------------------------------------------------------------------------------- 4. NaN is never verified


def test_verification_fails_on_nan_and_inf_which_max_would_skip():
    finite = torch.ones(3)
    assert max_abs_difference(torch.tensor([1.0, float("nan"), 1.0]), finite) == float("inf")
    assert max_abs_difference(finite, torch.tensor([1.0, 1.0, float("inf")])) == float("inf")
    report = VerificationReport({"hidden states": 1e-7, "LM logits": max_abs_difference(finite * float("nan"), finite)})
    assert not report.max_abs_difference <= 1e-4 and report.worst == "LM logits"


@pytest.mark.parametrize(
    "value, options, fragments",
    [
        (float("nan"), [], ["layers.0.fc1.weight", "NaN or infinite"]),
        (1e6, ["--dtype", "fp16"], ["layers.0.fc1.weight", "overflows fp16", "--dtype fp32 or bf16"]),
    ],
)
def test_a_nan_or_overflowing_weight_is_refused_naming_it(
    tmp_path, fairseq_checkpoint, capsys, value, options, fragments
):
    source = fairseq_checkpoint()
    payload = torch.load(source / "model.pt", weights_only=False)
    payload["model"]["encoder.sentence_encoder.layers.0.fc1.weight"][0, 0] = value
    torch.save(payload, source / "model.pt")
    status, stderr = run_xlmr(capsys, "convert", source, tmp_path / "out", *options)
    assert_one_line_error(status, stderr, *fragments)
    assert_nothing_written(tmp_path, "fairseq")


# ------------------------------------------------------------------------------- 5. one line, never a traceback


def damage_options(directory: Path, **changes) -> None:
    payload = torch.load(directory / "model.pt", weights_only=False)
    for name, value in changes.items():
        setattr(payload["args"], name, value)
    torch.save(payload, directory / "model.pt")


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (lambda d: (d / "sentencepiece.bpe.model").write_bytes(os.urandom(2000)),
         ["sentencepiece.bpe.model is not a sentencepiece model", "released with this model.pt"]),
        (lambda d: (d / "model.pt").write_text("a text file\nwith lines\n"), ["model.pt", "not a PyTorch checkpoint"]),
        (lambda d: damage_options(d, encoder_attention_heads=0), ["encoder_attention_heads=0", "damaged"]),
    ],
    ids=["garbage-sentencepiece", "text-model.pt", "zero-heads"],
)  # fmt: skip
def test_damaged_checkpoints_give_one_line(tmp_path, fairseq_checkpoint, capsys, damage, fragments):
    source = fairseq_checkpoint()
    damage(source)
    status, stderr = run_xlmr(capsys, "convert", source, tmp_path / "out")
    assert_one_line_error(status, stderr, *fragments)
    assert_nothing_written(tmp_path, "fairseq")


def run_with_file_size_limit(arguments: list, limit: int) -> subprocess.CompletedProcess:
    """`xlmr ARGUMENTS` in a process that cannot write files over `limit` bytes: a disk that fills up."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from modeling_xlmr.cli import main\n"
        f"sys.exit(main({[str(argument) for argument in arguments]!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


@pytest.mark.parametrize("from_archive", [False, True], ids=["writing", "unpacking"])
def test_a_full_disk_is_one_line_naming_the_space_needed(tmp_path, fairseq_checkpoint, from_archive):
    source = fairseq_checkpoint()
    if from_archive:
        source = pack_fairseq_archive(source, tmp_path / "xlmr.tiny.tar.gz")
    result = run_with_file_size_limit(["convert", source, tmp_path / "out"], limit=60_000)
    assert result.returncode == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("xlmr convert: error:")]
    assert "Traceback" not in result.stderr and "no room left" in error and "free" in error
    assert "download it again" not in error
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_lone_surrogate_is_one_line_in_jsonl_and_a_clear_error_in_the_api(classifier_repo, tmp_path, capsys):
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": "broken \\ud800 escape"}\n', encoding="utf-8")
    status, stderr = run_xlmr(capsys, "extract", "--model", classifier_repo, "--input", jsonl, "--output",
                              tmp_path / "v.npy")  # fmt: skip
    assert_one_line_error(status, stderr, "texts.jsonl line 2", "lone surrogate", command="extract")
    assert_nothing_written(tmp_path, "texts.jsonl")
    xlmr = XLMRHubInterface.from_pretrained(str(classifier_repo))
    for call in (lambda: xlmr.encode("broken \ud800"), lambda: xlmr.embed(["fine", "broken \ud800"])):
        with pytest.raises(ValueError, match="lone surrogate"):
            call()


def test_asking_for_a_missing_device_is_one_line(classifier_repo, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("hi\n", encoding="utf-8")
    # cuda:99 exists nowhere: with no CUDA at all, or with fewer GPUs, the message names the option and the fix.
    status, stderr = run_xlmr(capsys, "extract", "--model", classifier_repo, "--input", texts, "--output",
                              tmp_path / "v.npy", "--device", "cuda:99")  # fmt: skip
    error = assert_one_line_error(status, stderr, "--device cuda:99", command="extract")
    assert "--device cpu" in error or "device(s) here" in error


def test_a_truncated_checkpoint_to_resume_from_is_one_line(tiny_model_dir, nli_file, tmp_path, capsys):
    out = tmp_path / "run"
    status, stderr = run_xlmr(capsys, "finetune", "--model", tiny_model_dir, "--output-dir", out, "--train-file",
                              nli_file, "--max-steps", "2", "--save-strategy", "steps", "--save-steps", "1",
                              "--use-cpu", "--no-model-card")  # fmt: skip
    assert status == 0, stderr
    for name in ("model.safetensors", "optimizer.pt"):
        damaged = tmp_path / f"damaged-{name}"
        shutil.copytree(out / "checkpoint-2", damaged)
        (damaged / name).write_bytes((damaged / name).read_bytes()[:-100])
        status, stderr = run_xlmr(capsys, "finetune", "--model", tiny_model_dir, "--output-dir", out,
                                  "--train-file", nli_file, "--resume-from-checkpoint", damaged, "--use-cpu")  # fmt: skip
        assert_one_line_error(status, stderr, name, "is damaged", "earlier checkpoint", command="finetune")


# ------------------------------------------------------------------------------- 6. smaller


def test_an_expanded_stride_zero_tensor_is_refused(tmp_path, fairseq_checkpoint, capsys):
    source = fairseq_checkpoint()
    payload = torch.load(source / "model.pt", weights_only=False)
    key = "encoder.sentence_encoder.embed_positions.weight"
    positions = payload["model"][key]
    payload["model"][key] = positions[:1].clone().expand(100_000, positions.shape[1])  # 100k rows from one
    torch.save(payload, source / "model.pt")
    assert (source / "model.pt").stat().st_size < 1_000_000
    status, stderr = run_xlmr(capsys, "convert", source, tmp_path / "out")
    assert_one_line_error(status, stderr, key, "broadcast view")
    assert_nothing_written(tmp_path, "fairseq")


def test_classify_long_text_error_offers_only_what_classify_accepts(classifier_repo, tmp_path, capsys):
    texts = tmp_path / "long.txt"
    texts.write_text("word " * 700 + "\n", encoding="utf-8")
    status, stderr = run_xlmr(capsys, "classify", "--model", classifier_repo, "--input", texts, "--output",
                              tmp_path / "labels.jsonl", "--no-progress")  # fmt: skip
    error = assert_one_line_error(status, stderr, "--long-text truncate", command="classify")
    assert "chunk" not in error


def test_evaluate_writes_files_with_the_modes_of_plain_files(classifier_repo, nli_file, tmp_path, capsys):
    out = tmp_path / "eval"
    status, stderr = run_xlmr(capsys, "evaluate", "--model", classifier_repo, "--eval-file", nli_file, "--output-dir",
                              out, "--results-json", tmp_path / "r.json", "--results-markdown", tmp_path / "r.md")  # fmt: skip
    assert status == 0, stderr
    umask = os.umask(0)
    os.umask(umask)
    written = [tmp_path / "r.json", tmp_path / "r.md", *out.iterdir()]
    assert len(written) >= 4
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
