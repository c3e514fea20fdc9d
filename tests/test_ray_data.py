"""XLM-R on Ray Data: `xlmr extract --engine ray` and the `Dataset` entry points, on a local two-CPU Ray.

References are computed independently of Ray: `XLMRHubInterface.embed` / `classify` over all texts at once,
and the one-machine streaming path on the same input.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import ray
import torch

from modeling_xlmr import XLMRConfig, XLMRForSequenceClassification, XLMRHubInterface
from modeling_xlmr.cli import main
from modeling_xlmr.inference.sources import TextInput
from modeling_xlmr.inference.streaming import Embedder, extract_to_directory
from modeling_xlmr.ray_data import actors, embed_dataset
from tests.support.models import TEXTS, tiny_config_kwargs, word_level_tokenizer

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
CORPUS = [f"{TEXTS[index % len(TEXTS)]} {index}" for index in range(240)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny classifier repo (its encoder embeds, its head classifies) on a word-level vocabulary: every Ray
    actor loads it in its own process, where the real 250,002-piece tokenizer would take seconds each time."""
    tokenizer = word_level_tokenizer(CORPUS)
    directory = tmp_path_factory.mktemp("ray_repo")
    torch.manual_seed(3)
    config = tiny_config_kwargs(vocab_size=len(tokenizer), num_labels=3, id2label=LABELS)
    XLMRForSequenceClassification(
        XLMRConfig(**config, label2id={name: index for index, name in LABELS.items()})
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def xlmr(repo):
    return XLMRHubInterface.from_pretrained(str(repo))


def vectors(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    return values.values.to_numpy(zero_copy_only=False).reshape(len(values), -1)


@pytest.mark.slow
def test_engine_ray_with_an_actor_killed_mid_run_equals_the_streaming_path_and_embed(
    local_ray, repo, xlmr, tmp_path, monkeypatch
):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    marker = str(tmp_path / "killed")
    predictor = actors.XLMRPredictor

    class KilledOnce(predictor):
        """The first block any actor receives kills that actor's process (SIGKILL), once."""

        def __call__(self, batch):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return super().__call__(batch)
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(actors, "XLMRPredictor", KilledOnce)
    output = tmp_path / "ray-out"
    argv = ["extract", "--model", str(repo), "--input", str(source), "--output", f"{output}/", "--pooling", "mean",
            "--engine", "ray", "--num-actors", "2", "--shard-size", "20", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert os.path.exists(marker)  # an actor died in its task; Ray restarted it and retried the task

    table = pads.dataset(str(output), format="parquet").to_table()
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)  # not Ray's tensor extension type
    ids = table.column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(len(CORPUS)))
    expected = xlmr.embed(CORPUS, pooling="mean").numpy()
    np.testing.assert_allclose(vectors(table, "embedding"), expected[ids], atol=1e-6, rtol=0)
    assert len(list(output.glob("part-*.parquet"))) == 12

    streamed = tmp_path / "streamed"
    settings = {"model": "tiny", "revision": None, "dtype": "fp32"}
    extract_to_directory(Embedder(xlmr.engine, pooling="mean"), TextInput(str(source)), streamed, settings, 50,
                         progress=False)  # fmt: skip
    local = pads.dataset(str(streamed), format="parquet").to_table().sort_by("id")
    np.testing.assert_allclose(
        vectors(table.sort_by("id"), "embedding"), vectors(local, "embedding"), atol=1e-6, rtol=0
    )

    # The same command again: every shard verified complete, nothing recomputed (Ray is not even started).
    before = {path.name: path.stat().st_mtime_ns for path in output.glob("part-*")}
    assert main(argv) == 0
    assert {path.name: path.stat().st_mtime_ns for path in output.glob("part-*")} == before


def test_embed_dataset_adds_a_fixed_size_float32_column_and_keeps_the_others(local_ray, repo, xlmr):
    rows = [{"text": text, "doc": f"d{index}"} for index, text in enumerate(CORPUS[:90])]
    dataset = embed_dataset(ray.data.from_items(rows, override_num_blocks=3), str(repo), pooling="mean", normalize=True,
                            batch_size=16, max_tokens_per_batch=64)  # fmt: skip
    table = pa.concat_tables([ray.get(ref) for ref in dataset.to_arrow_refs()])

    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    order = [int(doc[1:]) for doc in table.column("doc").to_pylist()]
    assert sorted(order) == list(range(90)) and table.column("text").to_pylist() == [CORPUS[i] for i in order]
    expected = xlmr.embed([CORPUS[index] for index in order], pooling="mean", normalize=True).numpy()
    np.testing.assert_allclose(vectors(table, "embedding"), expected, atol=1e-6, rtol=0)


def test_the_classify_predictor_adds_label_score_and_probabilities(repo, xlmr):
    # The callable class `classify_dataset` puts on the actor pool, called as Ray calls it: a pyarrow batch in.
    predictor = actors.XLMRPredictor(str(repo), task="classify", drop_columns=["text"], max_tokens_per_batch=64)
    batch = pa.table({"text": CORPUS[:30], "doc": list(range(30))})
    table = predictor(batch)
    assert table.column_names == ["doc", "label", "score", "probabilities"]
    assert table.schema.field("probabilities").type == pa.list_(pa.float32(), 3)
    reference = xlmr.classify(CORPUS[:30])
    assert table.column("label").to_pylist() == [result["label"] for result in reference]
    expected = np.array([list(result["probabilities"].values()) for result in reference])
    np.testing.assert_allclose(vectors(table, "probabilities"), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(table.column("score").to_numpy(), expected.max(axis=1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no column 'body'"):
        actors.XLMRPredictor(str(repo), text_column="body")(batch)
