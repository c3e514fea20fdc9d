"""fairseq -> safetensors conversion: every checkpoint layout reproduces the fairseq weights' forward pass.

The yardstick is `reference_forward` (plain torch on fairseq-named tensors) applied to the weights the
fixture generated, in their canonical spelling, so a key-handling bug in the converter cannot hide in
the reference. Stock transformers' XLMRoberta* classes (no remote code) are a second, independent check.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
)

from conversion import convert_fairseq_checkpoint
from conversion.reference import reference_forward
from conversion.synthetic import pack_fairseq_archive
from modeling_xlmr import XLMRConfig, XLMRHubInterface
from modeling_xlmr.hub.heads import HEADS_FILE, described_heads, read_heads_file
from tests.support.fairseq import expected_fairseq_state
from tests.support.models import tiny_config
from tests.support.processes import REPO_ROOT, run_without_package

TOLERANCE = 1e-5
SENTENCES = [
    "the quick brown fox jumps",
    "le petit chat dort sur la chaise",
    "мы читаем новые книги",
    "我们 今天 在 公园",
]


def convert(source, output, **options):
    return convert_fairseq_checkpoint(source, output, log=lambda message: None, **options)


def tokenize(repo, sentences=SENTENCES):
    tokenizer = AutoTokenizer.from_pretrained(str(repo), trust_remote_code=True)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    return batch["input_ids"], batch["attention_mask"]


def masked_max_difference(actual, expected, attention_mask) -> float:
    return float((actual - expected).abs()[attention_mask.bool()].max())


def assert_reproduces_fairseq(repo, state, heads=()):
    """The repo, loaded through the Auto classes with remote code and by stock transformers, matches `state`."""
    input_ids, attention_mask = tokenize(repo)
    expected = reference_forward(state, input_ids, num_heads=4, heads=tuple(heads))
    remote = AutoModelForMaskedLM.from_pretrained(str(repo), trust_remote_code=True).eval()
    stock = XLMRobertaForMaskedLM.from_pretrained(str(repo)).eval()
    assert type(remote).__name__ == "XLMRForMaskedLM"
    for model in (remote, stock):
        with torch.no_grad():
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        assert len(outputs.hidden_states) == len(expected.hidden_states) == 3
        for actual, reference in zip(outputs.hidden_states, expected.hidden_states, strict=True):
            assert masked_max_difference(actual, reference, attention_mask) < TOLERANCE
        assert masked_max_difference(outputs.logits, expected.lm_logits, attention_mask) < TOLERANCE
    return input_ids, attention_mask, expected


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(layout="args"), id="args-namespace-2019"),
        pytest.param(dict(layout="cfg"), id="cfg-with-namespace-model"),
        pytest.param(dict(layout="cfg-dict"), id="cfg-with-dict-model"),
        pytest.param(dict(layout="args", legacy_names=True, legacy_buffers=True), id="legacy-key-names"),
        pytest.param(dict(layout="cfg", fused_layer_duplicates=True), id="fairseq-0.12-layer-duplicates"),
    ],
)
def test_every_layout_reproduces_the_fairseq_forward_pass(tmp_path, fairseq_checkpoint, options):
    source = fairseq_checkpoint(**options)
    result = convert(source, tmp_path / "out")

    assert_reproduces_fairseq(result.output, expected_fairseq_state(source, tiny_config()))
    assert result.verification.max_abs_difference < TOLERANCE
    assert result.head is None
    files = {path.name for path in result.output.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "sentencepiece.bpe.model",
        "configuration_xlmr.py",
        "modeling_xlmr.py",
        "tokenization_xlmr.py",
        "README.md",
    } <= files
    assert not any(name.startswith(".") for name in files)
    assert (result.output / "sentencepiece.bpe.model").read_bytes() == (source / "sentencepiece.bpe.model").read_bytes()
    config = json.loads((result.output / "config.json").read_text())
    assert (
        config["model_type"] == "xlm-roberta"
        and config["auto_map"]["AutoModelForMaskedLM"] == "modeling_xlmr.XLMRForMaskedLM"
    )
    assert config["max_position_embeddings"] == 514 and config["type_vocab_size"] == 1 and config["dtype"] == "float32"
    tokenizer_config = json.loads((result.output / "tokenizer_config.json").read_text())
    assert "AutoTokenizer" in tokenizer_config["auto_map"]
    # Nothing is left beside OUT: no partial or staging directory.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fairseq", "out"]


def test_classification_heads_are_all_kept_and_the_chosen_one_is_the_classifier(tmp_path, fairseq_checkpoint):
    heads = {"mnli": 3, "sentiment": 2}
    source = fairseq_checkpoint(classification_heads=heads)
    result = convert(source, tmp_path / "out", head="sentiment", labels=["negative", "positive"])
    state = expected_fairseq_state(source, tiny_config(), heads)
    input_ids, attention_mask, expected = assert_reproduces_fairseq(result.output, state, heads)

    config = json.loads((result.output / "config.json").read_text())
    assert config["fairseq_head_name"] == "sentiment"
    assert config["fairseq_classification_heads"] == {
        "mnli": {"num_classes": 3, "labels": None},
        "sentiment": {"num_classes": 2, "labels": ["negative", "positive"]},
    }
    for loader in (
        lambda: AutoModelForSequenceClassification.from_pretrained(str(result.output), trust_remote_code=True),
        lambda: XLMRobertaForSequenceClassification.from_pretrained(str(result.output)),
    ):
        classifier = loader().eval()
        assert classifier.config.id2label == {0: "negative", 1: "positive"}
        with torch.no_grad():
            logits = classifier(input_ids=input_ids, attention_mask=attention_mask).logits
        assert float((logits - expected.head_logits["sentiment"]).abs().max()) < TOLERANCE

    names = list(described_heads(XLMRConfig.from_pretrained(result.output)))
    stored = read_heads_file(result.output / HEADS_FILE, names)
    assert set(stored) == set(heads)
    for name in heads:
        for key, tensor in stored[name].items():
            assert torch.equal(tensor, state[f"classification_heads.{name}.{key}"])


def test_hub_interface_predicts_with_every_head(tmp_path, fairseq_checkpoint):
    heads = {"mnli": 3, "sentiment": 2}
    source = fairseq_checkpoint(classification_heads=heads)
    result = convert(source, tmp_path / "out", head="mnli")
    state = expected_fairseq_state(source, tiny_config(), heads)
    xlmr = XLMRHubInterface.from_pretrained(str(result.output))
    xlmr.eval()
    tokens = xlmr.encode(SENTENCES[1])
    expected = reference_forward(state, tokens[None], num_heads=4, heads=tuple(heads))
    for name in heads:
        log_probs = xlmr.predict(name, tokens).detach()
        reference = expected.head_logits[name].log_softmax(dim=-1)
        assert float((log_probs - reference).abs().max()) < TOLERANCE


def test_the_released_archive_layout_converts_like_the_directory(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint("xlmr.tiny.v0")
    archive = pack_fairseq_archive(source, tmp_path / "xlmr.tiny.v0.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:
        assert all(name.startswith("xlmr.tiny.v0/") for name in tar.getnames())
    from_directory = convert(source, tmp_path / "from-directory")
    from_archive = convert(archive, tmp_path / "from-archive")
    assert (from_archive.output / "model.safetensors").read_bytes() == (
        from_directory.output / "model.safetensors"
    ).read_bytes()
    card = ModelCard.load(from_archive.output / "README.md")
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in card.text
    with safe_open(str(from_archive.output / "model.safetensors"), framework="pt") as weights:
        stored = sum(torch.Size(weights.get_slice(key).get_shape()).numel() for key in weights.keys())
    assert from_archive.parameter_count == stored and f"{stored:,} stored" in card.text
    assert len(card.data.language) == 100 and card.data.pipeline_tag == "fill-mask"
    assert "xlmr.tiny.v0.tar.gz" in card.text
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "from-archive",
        "from-directory",
        "xlmr.tiny.v0",
        "xlmr.tiny.v0.tar.gz",
    ]


def test_archive_members_cannot_write_outside_the_staging_directory(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint("xlmr.tiny.v0")
    archive = tmp_path / "hostile.tar.gz"
    (tmp_path / "payload").write_text("should never be extracted")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "payload", arcname="../escaped.txt")
        for name in ("model.pt", "dict.txt", "sentencepiece.bpe.model"):
            tar.add(source / name, arcname=f"xlmr/{name}")
    result = convert(archive, tmp_path / "out")
    assert result.verification.max_abs_difference < TOLERANCE
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_large_checkpoints_are_sharded_with_an_index(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint()
    result = convert(source, tmp_path / "out", max_shard_size="60KB")
    index = json.loads((result.output / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (result.output / "model.safetensors").exists()
    assert all((result.output / shard).is_file() for shard in shards)
    assert "lm_head.bias" in index["weight_map"] and "roberta.embeddings.word_embeddings.weight" in index["weight_map"]
    assert_reproduces_fairseq(result.output, expected_fairseq_state(source, tiny_config()))


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_weights_are_the_rounded_fairseq_weights(tmp_path, fairseq_checkpoint, dtype, torch_dtype):
    source = fairseq_checkpoint()
    result = convert(source, tmp_path / "out", dtype=dtype)
    config = json.loads((result.output / "config.json").read_text())
    assert config["dtype"] == str(torch_dtype).removeprefix("torch.")
    state = expected_fairseq_state(source, tiny_config())
    with safe_open(str(result.output / "model.safetensors"), framework="pt") as weights:
        embeddings = weights.get_tensor("roberta.embeddings.word_embeddings.weight")
        assert embeddings.dtype == torch_dtype
        assert torch.equal(embeddings, state["encoder.sentence_encoder.embed_tokens.weight"].to(torch_dtype))
    model = AutoModelForMaskedLM.from_pretrained(str(result.output), trust_remote_code=True)
    assert model.dtype == torch_dtype
    rounded = {key: tensor.to(torch_dtype).float() for key, tensor in state.items()}
    input_ids, attention_mask = tokenize(result.output)
    expected = reference_forward(rounded, input_ids, num_heads=4)
    with torch.no_grad():
        logits = model.float()(input_ids=input_ids, attention_mask=attention_mask).logits
    assert masked_max_difference(logits, expected.lm_logits, attention_mask) < TOLERANCE


def test_cli_converts_and_refuses_to_overwrite_without_the_flag(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint(classification_heads={"mnli": 3})
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "modeling_xlmr.cli",
        "convert",
        str(source),
        str(output),
        "--labels",
        "contradiction,neutral,entailment",
    ]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(output)
    assert "max abs difference" in first.stderr
    config = json.loads((output / "config.json").read_text())
    assert config["fairseq_head_name"] == "mnli" and config["id2label"]["2"] == "entailment"

    marker = output / "config.json"
    before = marker.read_bytes()
    refused = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"xlmr convert: error: {output} already exists; pass --overwrite to replace it."
    assert marker.read_bytes() == before

    replaced = subprocess.run(
        command[:-2] + ["--overwrite", "--dtype", "bf16"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fairseq", "out"]


def test_converted_repo_runs_from_its_own_files_only(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint()
    result = convert(source, tmp_path / "out")
    input_ids, attention_mask = tokenize(result.output)
    expected = reference_forward(expected_fairseq_state(source, tiny_config()), input_ids, num_heads=4)
    torch.save(
        {"input_ids": input_ids, "attention_mask": attention_mask, "logits": expected.lm_logits},
        tmp_path / "expected.pt",
    )
    run_without_package(
        f"""
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        repo = {str(result.output)!r}
        data = torch.load({str(tmp_path / "expected.pt")!r})
        tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
        assert type(tokenizer).__name__ == "XLMRTokenizerFast", type(tokenizer)
        ids = tokenizer({SENTENCES!r}, padding=True, return_tensors="pt")["input_ids"]
        assert ids.tolist() == data["input_ids"].tolist()
        model = AutoModelForMaskedLM.from_pretrained(repo, trust_remote_code=True).eval()
        assert type(model).__name__ == "XLMRForMaskedLM"
        with torch.no_grad():
            logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
        mask = data["attention_mask"].bool()
        assert float((logits - data["logits"]).abs()[mask].max()) < {TOLERANCE}
        """
    )


def test_stock_auto_tokenizer_loads_the_repo_without_remote_code(tmp_path, fairseq_checkpoint):
    result = convert(fairseq_checkpoint(), tmp_path / "out")
    remote = AutoTokenizer.from_pretrained(str(result.output), trust_remote_code=True)
    stock = AutoTokenizer.from_pretrained(str(result.output))
    for sentence in SENTENCES:
        assert stock(sentence)["input_ids"] == remote(sentence)["input_ids"]
    assert stock.convert_tokens_to_ids("<mask>") == len(remote) - 1


def test_real_xlmr_vocabulary_converts_with_the_readme_token_ids(tmp_path, real_spm_model):
    """A tiny encoder over XLM-R's real 250002-token vocabulary (sentencepiece model from the test extra)."""
    from conversion.synthetic import build_fairseq_checkpoint

    source = build_fairseq_checkpoint(tmp_path / "fairseq", tiny_config(), sentencepiece_model=real_spm_model)
    assert (source / "dict.txt").read_text(encoding="utf-8").count("\n") == 249997
    result = convert(source, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(str(result.output), trust_remote_code=True)
    assert tokenizer("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]
    assert len(tokenizer) == 250002 == json.loads((result.output / "config.json").read_text())["vocab_size"]
    assert result.verification.max_abs_difference < TOLERANCE
    state = expected_fairseq_state(source, tiny_config())
    assert state["encoder.sentence_encoder.embed_tokens.weight"].shape[0] == 250002
    assert_reproduces_fairseq(result.output, state)
