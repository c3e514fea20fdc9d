"""`xlmr extract` / `xlmr classify` into a directory of parquet shards: streaming, resumable, safe.

References are computed independently: `XLMRHubInterface.embed` over the whole input at once (itself tested
against per-text `extract_features`), and the classification model's own forward pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from modeling_xlmr import XLMRForSequenceClassification, XLMRHubInterface
from modeling_xlmr.cli import main
from modeling_xlmr.inference.shards import OutputMismatchError
from modeling_xlmr.inference.sources import TextInput
from modeling_xlmr.inference.streaming import Embedder, extract_to_directory
from tests.support.models import TEXTS, build_tiny_repo, word_level_tokenizer
from tests.support.processes import REPO_ROOT

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
CORPUS = [f"{text} {index}" if index % 4 else text for index, text in enumerate(TEXTS * 7)]  # 63 texts, some equal


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny model on a word-level vocabulary: the command-line runs here load it afresh each time (the real
    vocabulary's tokenizer takes seconds to load; what is tested here is the streaming, not the tokenizer)."""
    return build_tiny_repo(tmp_path_factory.mktemp("sharded_repo"), word_level_tokenizer(TEXTS))


@pytest.fixture(scope="module")
def xlmr(repo):
    return XLMRHubInterface.from_pretrained(str(repo))


@pytest.fixture(scope="module")
def expected(xlmr) -> np.ndarray:
    return xlmr.embed(CORPUS, pooling="mean").numpy()


def read_output(directory) -> pa.Table:
    return pads.dataset(str(directory), format="parquet").to_table()


def vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    values = table.column(column).combine_chunks()
    return values.values.to_numpy(zero_copy_only=False).reshape(len(values), -1)


def run_library(
    xlmr,
    source,
    output,
    shard_size=100,
    block_size=2048,
    fmt=None,
    field="text",
    id_field="id",
    overwrite=False,
    **options,
) -> dict:
    """The streaming path with the fixture's loaded model (the CLI reloads it per call: seconds each)."""
    embedder = Embedder(xlmr.engine, **{"pooling": "mean", **options})
    source = TextInput(str(source), fmt, field, id_field)
    settings = {"model": "tiny", "revision": None, "dtype": "fp32"}
    return extract_to_directory(embedder, source, output, settings, shard_size, block_size, overwrite, progress=False)


def extract(repo, source, output, *options, command="extract") -> int:
    pooling = ["--pooling", "mean"] if command == "extract" else []
    return main([command, "--model", str(repo), "--input", str(source), "--output", f"{output}/", *pooling,
                 "--no-progress", *options])  # fmt: skip


def test_vectors_equal_embed_and_ids_are_line_numbers_whatever_the_block_and_shard_size(repo, xlmr, expected, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    for shard_size, block_size in ((100, 1000), (10, 3), (7, 64), (1, 1)):
        output = tmp_path / f"out-{shard_size}-{block_size}"
        if shard_size == 10:  # once through the command line
            assert extract(repo, source, output, "--shard-size", str(shard_size), "--block-size", str(block_size)) == 0
        else:
            run_library(xlmr, source, output, shard_size, block_size)
        table = read_output(output)
        assert table.schema.field("id").type == pa.int64()
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)  # fixed size, plain Arrow
        ids = table.column("id").to_numpy()
        assert sorted(ids.tolist()) == list(range(len(CORPUS)))
        np.testing.assert_allclose(vectors(table), expected[ids], atol=1e-6, rtol=0)
        shards = sorted(path.name for path in output.glob("part-*.parquet"))
        assert len(shards) == -(-len(CORPUS) // shard_size)
        manifest = json.loads((output / "_manifest.json").read_text())
        assert manifest["complete"] and manifest["count"] == len(CORPUS)
        assert manifest["settings"]["pooling"] == "mean" and manifest["settings"]["dtype"] == "fp32"
        assert manifest["settings"]["model"] == (str(repo) if shard_size == 10 else "tiny")
        assert [entry["file"] for entry in manifest["shards"]] == shards
        assert not [path for path in output.iterdir() if path.name.endswith(".tmp")]

    run_library(xlmr, source, tmp_path / "half", vector_dtype="float16")
    half = read_output(tmp_path / "half")
    assert half.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    np.testing.assert_allclose(vectors(half).astype(np.float32), expected, atol=2e-3, rtol=1e-3)


def test_every_input_format_gives_the_same_vectors_with_its_ids(xlmr, expected, tmp_path, monkeypatch):
    rows = [{"doc": f"d{index}", "body": text} for index, text in enumerate(CORPUS)]
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n", encoding="utf-8")
    with open(tmp_path / "docs.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=["doc", "body"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "docs.tsv").write_text("doc\tbody\n" + "".join(f"d{i}\t{t}\n" for i, t in enumerate(CORPUS)), "utf-8")
    pq.write_table(pa.table({"body": CORPUS, "doc": [row["doc"] for row in rows]}), tmp_path / "docs.parquet",
                   row_group_size=8)  # fmt: skip
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "a.txt").write_text("\n".join(CORPUS[:30]) + "\n", encoding="utf-8")
    (parts / "b.txt").write_text("\n".join(CORPUS[30:]), encoding="utf-8")
    (parts / "_SUCCESS").write_text("")

    doc_ids = [f"d{index}" for index in range(len(CORPUS))]
    cases = {
        "docs.jsonl": doc_ids,
        "docs.csv": doc_ids,
        "docs.tsv": doc_ids,
        "docs.parquet": doc_ids,
        "parts": list(range(len(CORPUS))),  # a directory: line numbers run on across its files
        str(parts / "*.txt"): list(range(len(CORPUS))),
    }
    for name, ids in cases.items():
        output = tmp_path / f"out-{abs(hash(name))}"
        run_library(xlmr, tmp_path / name, output, 25, 9, field="body", id_field="doc")
        table = read_output(output)
        assert table.column("id").to_pylist() == ids, name
        np.testing.assert_allclose(vectors(table), expected, atol=1e-6, rtol=0, err_msg=name)

    # jsonl without ids: the line number, blank lines counted, so each id points at its line.
    output = tmp_path / "out-jsonl-lines"
    run_library(xlmr, tmp_path / "docs.jsonl", output, field="body", id_field="none")
    assert read_output(output).column("id").to_pylist() == list(range(10)) + list(range(11, len(CORPUS) + 1))

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(CORPUS)).encode("utf-8"))))
    assert run_library(xlmr, "-", tmp_path / "out-stdin", 20)["shards"] == 4
    table = read_output(tmp_path / "out-stdin")
    assert table.column("id").to_pylist() == list(range(len(CORPUS)))
    np.testing.assert_allclose(vectors(table), expected, atol=1e-6, rtol=0)


def test_classify_writes_label_score_and_probabilities_in_label_order(xlmr, tmp_path):
    repo = build_tiny_repo(
        tmp_path / "classifier", xlmr.tokenizer, XLMRForSequenceClassification, seed=5,
        num_labels=3, id2label=LABELS, label2id={name: index for index, name in LABELS.items()},
    )  # fmt: skip
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert extract(repo, source, tmp_path / "labels", "--shard-size", "4", command="classify") == 0

    table = read_output(tmp_path / "labels").sort_by("id")
    assert table.schema.field("probabilities").type == pa.list_(pa.float32(), 3)
    assert json.loads((tmp_path / "labels" / "_manifest.json").read_text())["labels"] == list(LABELS.values())
    model = XLMRForSequenceClassification.from_pretrained(repo).eval()
    tokenizer = xlmr.tokenizer  # the same tokenizer the repo was saved with
    with torch.no_grad():
        reference = torch.cat([model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1) for text in TEXTS])
    np.testing.assert_allclose(vectors(table, "probabilities"), reference.numpy(), atol=1e-5, rtol=0)
    assert table.column("label").to_pylist() == [LABELS[int(index)] for index in reference.argmax(-1)]
    np.testing.assert_allclose(table.column("score").to_numpy(), reference.max(-1).values.numpy(), atol=1e-5)


def test_a_rerun_redoes_only_missing_or_damaged_shards_and_refuses_other_settings(
    repo, xlmr, expected, tmp_path, capsys
):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(CORPUS), encoding="utf-8")
    output = tmp_path / "out"
    assert run_library(xlmr, source, output, 10)["computed"] == 7
    (output / "part-000001.parquet").unlink()  # lost
    damaged = output / "part-000004.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-20] + bytes(20))  # same size, other bytes: only the checksum knows
    untouched = (output / "part-000002.parquet").stat().st_mtime_ns

    assert run_library(xlmr, source, output, 10)["computed"] == 2
    assert (output / "part-000002.parquet").stat().st_mtime_ns == untouched
    table = read_output(output)
    np.testing.assert_allclose(vectors(table), expected[table.column("id").to_numpy()], atol=1e-6, rtol=0)
    assert run_library(xlmr, source, output, 10)["computed"] == 0  # complete: nothing to do

    (output / "notes.txt").write_text("mine")
    before = {path.name: path.stat().st_mtime_ns for path in output.iterdir()}
    for options, message in (
        ({"pooling": "cls"}, "pooling='mean' (this run: 'cls')"),
        ({"shard_size": 20}, "shard_size=10 (this run: 20)"),
        ({"vector_dtype": "float16"}, "vector_dtype='float32' (this run: 'float16')"),
    ):
        with pytest.raises(OutputMismatchError, match=re.escape(message) + ".*--overwrite to start over"):
            run_library(xlmr, source, output, **{"shard_size": 10, **options})
        assert {path.name: path.stat().st_mtime_ns for path in output.iterdir()} == before
    source.write_text("\n".join(CORPUS[:-1]), encoding="utf-8")  # the input changed
    assert extract(repo, source, output, "--shard-size", "10") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("xlmr extract: error: output ") and "input=" in error[0], error
    assert {path.name: path.stat().st_mtime_ns for path in output.iterdir()} == before

    run_library(xlmr, source, output, 20, pooling="cls", overwrite=True)
    assert (output / "notes.txt").read_text() == "mine"  # starting over removes only what it wrote
    assert sorted(path.name for path in output.glob("part-*")) == [f"part-00000{index}.parquet" for index in range(4)]
    assert len(list((output / "_shards").iterdir())) == 4

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not empty and holds no _manifest.json"):
        run_library(xlmr, source, foreign, overwrite=True)
    assert os.listdir(foreign) == ["data.parquet"]


@pytest.mark.slow
def test_sigkill_mid_run_leaves_only_whole_shards_and_the_rerun_equals_an_uninterrupted_run(repo, xlmr, tmp_path):
    # 100 shards of 30: enough that the 0.3 s before the kill never covers the whole run, even on a fast CPU
    # (600 texts once finished all 20 shards in that time)
    texts = [f"{TEXTS[index % len(TEXTS)]} {index}" for index in range(3000)]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts), encoding="utf-8")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "modeling_xlmr.cli", "extract", "--model", str(repo), "--input", str(source),
               "--output", f"{output}/", "--pooling", "mean", "--no-progress", "--shard-size", "30",
               "--block-size", "20", "--max-tokens-per-batch", "64"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((output / "_shards").glob("part-*.json")) if output.exists() else True:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    time.sleep(0.3)  # into the middle of a later shard
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()

    named = sorted(output.glob("part-*.parquet"))
    assert 1 <= len(named) < len(texts) // 30, "the kill must land mid-run"
    for path in named:  # every final name holds a whole shard (one being written is under a .tmp name)
        assert pq.read_metadata(path).num_rows == 30
    assert main([*command[3:], "--max-tokens-per-batch", "8192"]) == 0  # the same command, finishing the rest

    table = read_output(output)
    expected = xlmr.embed(texts, pooling="mean").numpy()
    assert sorted(table.column("id").to_pylist()) == list(range(len(texts)))
    np.testing.assert_allclose(vectors(table), expected[table.column("id").to_numpy()], atol=1e-6, rtol=0)
    assert not [path for path in output.iterdir() if path.name.endswith(".tmp")]


GOOD_JSONL = b"".join(b'{"text": "fine %d"}\n' % index for index in range(30))
# Each bad line comes after several full shards' worth of good ones: the input is checked whole first.
BAD_INPUTS = {
    "bad UTF-8": ("bad.txt", b"fine\n" * 30 + b"th\xffree\n", "bad.txt: line 31 is not UTF-8"),
    "not JSON": ("bad.jsonl", GOOD_JSONL + b'{"text": oops}\n', "bad.jsonl line 31 is not JSON"),
    "missing field": ("bad.jsonl", GOOD_JSONL + b'{"body": "b"}\n', "bad.jsonl line 31 has no text field 'text'"),
    "ids of two types": (
        "bad.jsonl", b'{"text": "a", "id": 1}\n' * 30 + b'{"text": "b", "id": "x"}\n', "bad.jsonl line 31: id field",
    ),
    "missing column": ("bad.csv", b"body\n" + b"x\n" * 30, "bad.csv has no column 'text' (columns: body)"),
    "ragged csv row": ("bad.csv", b"text\n" + b"fine\n" * 30 + b"a,b\n", "bad.csv line 32 has 2 fields"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_and_line_and_nothing_is_written(case, repo, tmp_path, capsys):
    name, content, message = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(content)
    before = set(os.listdir(tmp_path))
    assert extract(repo, tmp_path / name, tmp_path / "out", "--shard-size", "5") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("xlmr extract: error: "), error
    assert message in error[0] and str(tmp_path) in error[0], error[0]
    assert set(os.listdir(tmp_path)) == before  # no directory, no shard, no temporary file


def test_bad_input_under_engine_ray_fails_the_same_way_before_ray_starts(repo, tmp_path, capsys):
    name, content, message = BAD_INPUTS["not JSON"]
    (tmp_path / name).write_bytes(content)
    assert extract(repo, tmp_path / name, tmp_path / "out", "--engine", "ray") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
    assert not (tmp_path / "out").exists()


def test_bad_stdin_after_full_shards_names_nothing(xlmr, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\n" * 25 + b"b\xffd\n")))
    with pytest.raises(ValueError, match="line 26 is not UTF-8"):
        run_library(xlmr, "-", tmp_path / "out", 5)
    assert not (tmp_path / "out").exists()  # five full shards were written, under temporary names only


def test_engine_ray_without_ray_is_one_line_naming_the_install_command(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    (tmp_path / "t.txt").write_text("hello\n")
    assert extract(repo, tmp_path / "t.txt", tmp_path / "out", "--engine", "ray") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "xlmr extract: error: Ray Data inference (xlmr extract --engine ray, modeling_xlmr.ray_data) needs the "
        + "optional package 'ray': pip install 'xlmr[ray]' (from a source checkout: pip install -e '.[ray]')."
    ]
    assert not (tmp_path / "out").exists()


def test_a_text_over_the_limit_is_named_by_its_line_and_its_shard_is_not_written(xlmr, tmp_path):
    source = tmp_path / "long.txt"
    source.write_text("short\n" * 7 + "word " * 600 + "\n" + "short\n" * 4, encoding="utf-8")
    with pytest.raises(ValueError, match=r"long.txt line 8: the text has \d+ tokens .*--long-text truncate"):
        run_library(xlmr, source, tmp_path / "out", 5)
    assert sorted(os.listdir(tmp_path / "out")) == ["_manifest.json", "_shards", "part-000000.parquet"]
    assert run_library(xlmr, source, tmp_path / "truncated", 5, long_text="truncate")["rows"] == 12
