"""The XLM-R family in this package: transformers repos (multilingual-e5, bge-m3, rerankers) adopted by
`xlmr convert`, then run by sentence-transformers, pipelines and Trainer on the fast path, against stock
transformers and stock sentence-transformers on the source repo; and ONNX export against onnxruntime."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import ModelCard

from modeling_xlmr import XLMRHubInterface
from modeling_xlmr.hub.sentence_settings import SentenceSettings, write_sentence_transformers_files
from tests.support.cli import run_xlmr
from tests.support.models import TEXTS, fast_stock_tokenizer, tiny_config_kwargs

PROMPTS = {"query": "query: ", "passage": "passage: "}
SOURCE_CARD = (
    "---\nlanguage:\n- en\n- fr\nlicense: apache-2.0\ntags:\n- sentence-similarity\n---\n\n# tiny e5\n\nSource text.\n"
)


def stock_repo(directory, tokenizer_json, model_class=transformers.XLMRobertaModel, seed=0, **config):
    torch.manual_seed(seed)
    model = model_class(transformers.XLMRobertaConfig(**tiny_config_kwargs(vocab_size=250002, **config)))
    model.save_pretrained(directory)
    fast_stock_tokenizer(tokenizer_json).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def e5_source(real_tokenizer_json, tmp_path_factory):
    """An e5-shaped stock repo: XLMRobertaModel with its pooler, mean pooling, normalized, query/passage
    prompts, a card with metadata, and an extra weight file (like bge-m3's colbert_linear.pt)."""
    source = stock_repo(tmp_path_factory.mktemp("family") / "tiny-e5", real_tokenizer_json)
    write_sentence_transformers_files(source, SentenceSettings("mean", True, 512, dict(PROMPTS)), hidden_size=32)
    (source / "README.md").write_text(SOURCE_CARD, encoding="utf-8")
    torch.save({"weight": torch.randn(4, 32)}, source / "colbert_linear.pt")
    return source


@pytest.fixture(scope="module")
def e5_adopted(e5_source, tmp_path_factory):
    output = tmp_path_factory.mktemp("adopted") / "tiny-e5-xlmr"
    from modeling_xlmr.cli import main

    assert main(["convert", str(e5_source), str(output), "--base-model", "someone/tiny-e5"]) == 0
    return output


def packed_batches(module_name: str, monkeypatch) -> list:
    """Count the PackedBatch objects the model of `module_name` (installed or remote code) builds."""
    package = module_name.rpartition(".")[0]
    packing = sys.modules[f"{package}.packing"]
    built, from_mask = [], packing.PackedBatch.from_mask

    def counting(mask):
        built.append(mask.shape)
        return from_mask(mask)

    monkeypatch.setattr(packing.PackedBatch, "from_mask", staticmethod(counting))
    return built


# ------------------------------------------------------------------------------------- adoption


def test_adoption_keeps_every_file_and_weight_and_names_the_source(e5_source, e5_adopted):
    for path in e5_source.rglob("*"):
        relative = path.relative_to(e5_source)
        if path.is_file() and relative.as_posix() not in ("config.json", "README.md"):
            assert (e5_adopted / relative).read_bytes() == path.read_bytes(), relative
    source_config = json.loads((e5_source / "config.json").read_text())
    adopted_config = json.loads((e5_adopted / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings", "architectures"):
        assert adopted_config[key] == source_config[key], key
    assert adopted_config["auto_map"]["AutoModel"] == "modeling_xlmr.XLMRModel"
    assert adopted_config["add_pooling_layer"] is True  # the source's weights hold a pooler
    card = ModelCard.load(e5_adopted / "README.md")
    assert card.data.base_model == "someone/tiny-e5"
    assert card.data.license == "apache-2.0" and card.data.language == ["en", "fr"]
    assert "Source text." in card.text


def test_sentence_transformers_on_the_fast_path_matches_stock(e5_source, e5_adopted, monkeypatch):
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(e5_source)).encode(TEXTS, prompt_name="query")
    ours = SentenceTransformer(str(e5_adopted), trust_remote_code=True)
    auto_model = ours[0].auto_model
    assert type(auto_model).__name__ == "XLMRModel" and auto_model.pooler is not None
    built = packed_batches(type(auto_model).__module__, monkeypatch)
    actual = ours.encode(TEXTS, prompt_name="query", batch_size=4)
    assert built, "sentence-transformers did not reach the packed path"
    np.testing.assert_allclose(actual, expected, atol=1e-6, rtol=0)
    # The same directory, without remote code, is a stock sentence-transformers model.
    plain = SentenceTransformer(str(e5_adopted))
    assert type(plain[0].auto_model) is transformers.XLMRobertaModel
    np.testing.assert_allclose(plain.encode(TEXTS, prompt_name="query"), expected, atol=1e-6, rtol=0)


def test_embed_and_extract_follow_the_repos_sentence_settings(e5_source, e5_adopted, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    texts = [text for text in TEXTS if text]
    reference = SentenceTransformer(str(e5_source))
    queries = reference.encode(texts, prompt_name="query")
    xlmr = XLMRHubInterface.from_pretrained(str(e5_adopted))
    np.testing.assert_allclose(xlmr.embed(texts, prompt_name="query").numpy(), queries, atol=1e-6, rtol=0)
    np.testing.assert_allclose(xlmr.embed(texts, prompt="query: ").numpy(), queries, atol=1e-6, rtol=0)
    np.testing.assert_allclose(xlmr.embed(texts).numpy(), reference.encode(texts), atol=1e-6, rtol=0)

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    for options, expected in ((["--prompt-name", "passage"], reference.encode(texts, prompt_name="passage")),
                              (["--pooling", "cls", "--no-normalize"], None)):  # fmt: skip
        status, stderr = run_xlmr(capsys, "extract", "--model", e5_adopted, "--input", source, "--output",
                                  tmp_path / "v.npy", "--no-progress", *options)  # fmt: skip
        assert status == 0, stderr
        vectors = np.load(tmp_path / "v.npy")
        if expected is not None:
            np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)
        else:  # cls, not normalized: the <s> state as stock transformers computes it
            stock = transformers.XLMRobertaModel.from_pretrained(e5_source).eval()
            batch = fast_stock_tokenizer_for(e5_source)(texts, padding=True, return_tensors="pt")
            with torch.no_grad():
                first = stock(**batch).last_hidden_state[:, 0].numpy()
            np.testing.assert_allclose(vectors, first, atol=1e-5, rtol=0)
    status, stderr = run_xlmr(capsys, "extract", "--model", e5_adopted, "--input", source, "--output",
                              tmp_path / "w.npy", "--prompt-name", "title")  # fmt: skip
    assert status == 2 and "no prompt named 'title'" in stderr and "'query'" in stderr


def fast_stock_tokenizer_for(repo):
    return transformers.AutoTokenizer.from_pretrained(repo)


def test_sentence_transformers_files_are_written_from_options(real_tokenizer_json, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    source = stock_repo(tmp_path / "plain", real_tokenizer_json, seed=3)
    output = tmp_path / "plain-xlmr"
    status, stderr = run_xlmr(capsys, "convert", source, output, "--pooling", "mean", "--normalize",
                              "--prompt", "query=query: ", "--prompt", "passage=passage: ")  # fmt: skip
    assert status == 0, stderr
    stock = transformers.XLMRobertaModel.from_pretrained(source).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    batch = tokenizer([PROMPTS["query"] + text for text in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = stock(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    for trust_remote_code in (False, True):  # stock sentence-transformers reads the files; ours too
        model = SentenceTransformer(str(output), trust_remote_code=trust_remote_code)
        np.testing.assert_allclose(model.encode(TEXTS, prompt_name="query"), expected, atol=1e-6, rtol=0)


def test_cross_encoder_and_pipelines_on_the_fast_path_match_stock(real_tokenizer_json, tmp_path, monkeypatch, capsys):
    from sentence_transformers import CrossEncoder

    source = stock_repo(tmp_path / "reranker", real_tokenizer_json, transformers.XLMRobertaForSequenceClassification,
                        seed=5, num_labels=1)  # fmt: skip
    output = tmp_path / "reranker-xlmr"
    assert run_xlmr(capsys, "convert", source, output)[0] == 0
    pairs = [("what is xlm-r?", text) for text in TEXTS]
    expected = CrossEncoder(str(source)).predict(pairs)
    ours = CrossEncoder(str(output), trust_remote_code=True)
    built = packed_batches(type(ours.model).__module__, monkeypatch)
    np.testing.assert_allclose(ours.predict(pairs, batch_size=8), expected, atol=1e-6, rtol=0)
    assert built

    stock_pipe = transformers.pipeline("text-classification", model=str(source), function_to_apply="none")
    our_pipe = transformers.pipeline("text-classification", model=str(output), trust_remote_code=True,
                                     function_to_apply="none")  # fmt: skip
    texts = [text for text in TEXTS if text]
    for mine, theirs in zip(our_pipe(texts, batch_size=4), stock_pipe(texts, batch_size=4)):
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-5)


def test_feature_extraction_pipeline_and_trainer_predict_on_the_fast_path(e5_source, e5_adopted, monkeypatch):
    texts = [text for text in TEXTS if text]
    stock_pipe = transformers.pipeline("feature-extraction", model=str(e5_source))
    our_pipe = transformers.pipeline("feature-extraction", model=str(e5_adopted), trust_remote_code=True)
    built = packed_batches(type(our_pipe.model).__module__, monkeypatch)
    lengths = [len(ids) for ids in our_pipe.tokenizer(texts)["input_ids"]]
    for mine, theirs, length in zip(our_pipe(texts, batch_size=4), stock_pipe(texts, batch_size=4), lengths):
        # The pipeline hands back each text's rows of the padded batch: real tokens match stock, the rows of
        # padding (stock's are meaningless values) come back as zeros.
        mine, theirs = np.array(mine)[0], np.array(theirs)[0]
        np.testing.assert_allclose(mine[:length], theirs[:length], atol=1e-5, rtol=0)
        assert not mine[length:].any()
    assert built

    from datasets import Dataset

    tokenizer = transformers.AutoTokenizer.from_pretrained(e5_source)
    dataset = Dataset.from_dict(dict(tokenizer(texts)))
    args = transformers.TrainingArguments(output_dir=str(e5_adopted.parent / "predict"), per_device_eval_batch_size=4,
                                          report_to="none", use_cpu=True)  # fmt: skip
    model = transformers.AutoModel.from_pretrained(e5_adopted, trust_remote_code=True)
    built.clear()
    packed_batches(type(model).__module__, monkeypatch)
    trainer = transformers.Trainer(
        model=model, args=args, data_collator=transformers.DataCollatorWithPadding(tokenizer)
    )
    predicted = trainer.predict(dataset).predictions
    stock = transformers.Trainer(model=transformers.AutoModel.from_pretrained(e5_source), args=args,
                                 data_collator=transformers.DataCollatorWithPadding(tokenizer))  # fmt: skip
    expected = stock.predict(dataset).predictions
    first, first_stock = (
        predicted[0] if isinstance(predicted, tuple) else predicted,
        expected[0] if isinstance(expected, tuple) else expected,
    )
    for row, text_ids in enumerate(dataset["input_ids"]):
        np.testing.assert_allclose(first[row, : len(text_ids)], first_stock[row, : len(text_ids)], atol=1e-5, rtol=0)


def test_a_long_position_table_like_bge_m3_is_kept(real_tokenizer_json, tmp_path, capsys):
    """bge-m3 has 8194 position rows; a smaller table beyond XLM-R's 514 shows the same: no 512 cap."""
    source = stock_repo(tmp_path / "long", real_tokenizer_json, seed=7, max_position_embeddings=1026)
    output = tmp_path / "long-xlmr"
    assert run_xlmr(capsys, "convert", source, output)[0] == 0
    text = "un deux trois quatre cinq six sept huit neuf dix " * 60  # ~ 720 tokens
    xlmr = XLMRHubInterface.from_pretrained(str(output))
    assert xlmr.max_positions == 1024
    vector = xlmr.embed([text], pooling="mean")[0]
    stock = transformers.XLMRobertaModel.from_pretrained(source).eval()
    batch = transformers.AutoTokenizer.from_pretrained(source)([text], return_tensors="pt")
    assert batch["input_ids"].shape[1] > 512
    with torch.no_grad():
        expected = stock(**batch).last_hidden_state[0].mean(0)
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- no random pooler


def test_a_repo_without_pooler_weights_loads_without_one(fairseq_checkpoint, tmp_path):
    from conversion import convert_fairseq_checkpoint
    from modeling_xlmr import XLMRModel

    output = convert_fairseq_checkpoint(fairseq_checkpoint(), tmp_path / "repo", log=lambda _: None).output
    remote, info = transformers.AutoModel.from_pretrained(output, trust_remote_code=True, output_loading_info=True)
    assert remote.pooler is None and not any(info.values())
    ours, info = XLMRModel.from_pretrained(output, output_loading_info=True)
    assert ours.pooler is None and not any(info.values())
    stock, info = transformers.AutoModelForMaskedLM.from_pretrained(output, output_loading_info=True)
    assert not any(info.values())


# ------------------------------------------------------------------------------------- ONNX


def test_export_onnx_fp32_and_int8_match_pytorch_in_onnxruntime(e5_adopted, tmp_path, capsys):
    import onnxruntime

    output = tmp_path / "onnx"
    status, stderr = run_xlmr(capsys, "export-onnx", e5_adopted, output, "--quantize", "int8")
    assert status == 0, stderr
    assert {"model.onnx", "model_quantized.onnx", "tokenizer.json", "config.json"} <= {p.name for p in output.iterdir()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(output)
    batch = tokenizer(
        ["one", "a somewhat longer sentence here", "Мы читаем", "x y z"], padding=True, return_tensors="np"
    )
    feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    stock = transformers.XLMRobertaModel.from_pretrained(e5_adopted).eval()
    with torch.no_grad():
        expected = stock(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"].astype(bool)
    (fp32,) = onnxruntime.InferenceSession(str(output / "model.onnx")).run(None, feeds)
    np.testing.assert_allclose(fp32[mask], expected[mask], atol=1e-5, rtol=0)
    (int8,) = onnxruntime.InferenceSession(str(output / "model_quantized.onnx")).run(None, feeds)
    cosine = (
        (int8[mask] * expected[mask]).sum(-1)
        / np.linalg.norm(int8[mask], axis=-1)
        / np.linalg.norm(expected[mask], axis=-1)
    )
    assert cosine.mean() > 0.99
