"""XLMRHubInterface: fairseq's RobertaHubInterface API (the seed README's examples) on the Transformers model.

References are independent of the interface: sentencepiece's own segmentation for `encode`, stock
transformers' XLMRoberta* classes for features, and `conversion.reference_forward` (a plain-torch
fairseq forward over the fairseq-named weights) for the heads of a converted fairseq checkpoint.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modeling_xlmr import (
    XLMRConfig,
    XLMRForMaskedLM,
    XLMRForSequenceClassification,
    XLMRHubInterface,
)
from modeling_xlmr.common.dtypes import parse_dtype
from modeling_xlmr.hub.alignment import word_alignment_matrix
from tests.support.fairseq import expected_fairseq_state
from tests.support.models import (
    REAL_VOCAB,
    build_tiny_repo,
    cosine,
    fast_stock_tokenizer,
    tiny_config,
    tiny_config_kwargs,
)

SENTENCES = [
    "Hello world!",
    "Le petit chat dort sur la chaise.",
    "Мы читаем новые книги вечером.",
    "我们今天在公园里散步。",
    "Watoto wanacheza mpira uwanjani.",
]


@pytest.fixture(scope="module")
def tiny_repo(real_tokenizer, tmp_path_factory) -> Path:
    return build_tiny_repo(tmp_path_factory.mktemp("tiny_xlmr"), real_tokenizer)


@pytest.fixture(scope="module")
def xlmr(tiny_repo) -> XLMRHubInterface:
    return XLMRHubInterface.from_pretrained(str(tiny_repo)).eval()


# ---------------------------------------------------------------------------------------- encode / decode


def test_readme_example_ids_and_round_trip(xlmr):
    tokens = xlmr.encode("Hello world!")
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [0, 35378, 8999, 38, 2]
    assert xlmr.decode(tokens) == "Hello world!"


def test_encode_follows_sentencepiece_and_fairseq_separators(xlmr, real_spm_model):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)

    def fairseq_ids(text: str) -> list[int]:  # fairseq: spm pieces looked up in the dictionary
        return xlmr.tokenizer.convert_tokens_to_ids(processor.encode(text, out_type=str))

    first, second, third = SENTENCES[1], SENTENCES[2], SENTENCES[3]
    assert xlmr.encode(first).tolist() == [0, *fairseq_ids(first), 2]
    literal = "a literal <mask> and <s> are text to fairseq"
    assert xlmr.encode(literal).tolist() == [0, *fairseq_ids(literal), 2]
    assert xlmr.tokenizer.mask_token_id not in xlmr.encode(literal).tolist()
    assert xlmr.encode(first, second, third).tolist() == [
        0,
        *fairseq_ids(first),
        2,
        2,
        *fairseq_ids(second),
        2,
        2,
        *fairseq_ids(third),
        2,
    ]
    assert xlmr.encode(first, second, no_separator=True).tolist() == [
        0,
        *fairseq_ids(first),
        2,
        *fairseq_ids(second),
        2,
    ]


def test_decode_splits_sentences_on_double_eos_and_keeps_special_pieces(xlmr):
    assert xlmr.decode(xlmr.encode(*SENTENCES[1:4])) == SENTENCES[1:4]
    # fairseq's Dictionary.string drops <s>/</s> only; <mask> and <unk> stay visible.
    tokens = torch.tensor([0, 35378, xlmr.tokenizer.mask_token_id, 3, 2])
    assert xlmr.decode(tokens) == "Hello<mask><unk>"
    with pytest.raises(ValueError, match="1-D"):
        xlmr.decode(tokens[None])


# ---------------------------------------------------------------------------------------- features


def test_features_match_stock_transformers_and_all_hiddens_end_with_them(xlmr, tiny_repo):
    from transformers import XLMRobertaModel

    tokens = xlmr.encode("Hello world!")
    last_layer_features = xlmr.extract_features(tokens)
    assert last_layer_features.shape == (1, 5, 32)
    all_layers = xlmr.extract_features(tokens, return_all_hiddens=True)
    assert len(all_layers) == 2 + 1
    assert torch.equal(all_layers[-1], last_layer_features)

    stock = XLMRobertaModel.from_pretrained(tiny_repo, add_pooling_layer=False).eval()
    with torch.no_grad():
        expected = stock(tokens[None], output_hidden_states=True).hidden_states
    for ours, theirs in zip(all_layers, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_padded_token_batches_give_each_sentence_its_own_features(xlmr):
    encoded = [xlmr.encode(text) for text in SENTENCES]
    batch = torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True, padding_value=1)
    features = xlmr.extract_features(batch)
    for row, tokens in enumerate(encoded):
        alone = xlmr.extract_features(tokens)[0]
        torch.testing.assert_close(features[row, : len(tokens)], alone, atol=1e-5, rtol=1e-5)


def test_too_long_input_raises_like_fairseq_with_the_numbers(xlmr):
    tokens = torch.cat([torch.tensor([0]), torch.full((511,), 35378), torch.tensor([2])])  # 513 tokens
    with pytest.raises(ValueError, match=r"tokens exceeds maximum length: 513 > 512"):
        xlmr.extract_features(tokens)
    assert xlmr.extract_features(tokens[1:]).shape == (1, 512, 32)  # 512 is allowed


@pytest.mark.parametrize(
    "sizes, n_layers, hidden",
    [(dict(), 12, 768), (XLMRConfig.large().to_dict(), 24, 1024)],
    ids=["base", "large"],
)
def test_base_and_large_shapes_are_fairseqs(real_tokenizer, sizes, n_layers, hidden):
    """The seed README's shapes. The vocabulary is cut to 40k rows (covering the ids used) to stay light."""
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    config = XLMRConfig(vocab_size=40000, **{key: sizes[key] for key in keys if key in sizes})
    model = random_bf16_model(config)
    xlmr = XLMRHubInterface(model, real_tokenizer).eval()
    tokens = xlmr.encode("Hello world!")
    with torch.inference_mode():
        last_layer_features = xlmr.extract_features(tokens)
        all_layers = xlmr.extract_features(tokens, return_all_hiddens=True)
    assert last_layer_features.size() == torch.Size([1, 5, hidden])
    assert len(all_layers) == n_layers + 1
    assert torch.all(all_layers[-1] == last_layer_features)
    assert all(layer.shape == (1, 5, hidden) for layer in all_layers)


def random_bf16_model(config: XLMRConfig) -> XLMRForMaskedLM:
    """A random model allocated directly in bf16 (large in fp32 is 1.2 GB and slow to initialise)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = XLMRForMaskedLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                parameter.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model


# ---------------------------------------------------------------------------------------- heads


def test_registered_head_predicts_log_softmax_of_fairseqs_head_formula(xlmr):
    xlmr.register_classification_head("topic", num_classes=4, inner_dim=16)
    head = xlmr.classification_heads["topic"]
    assert (head.dense.out_features, head.out_proj.out_features) == (16, 4)
    tokens = xlmr.encode(SENTENCES[1])
    with torch.no_grad():
        features = xlmr.extract_features(tokens)
        logits = F.linear(
            torch.tanh(F.linear(features[:, 0], head.dense.weight, head.dense.bias)),
            head.out_proj.weight,
            head.out_proj.bias,
        )
        torch.testing.assert_close(xlmr.predict("topic", tokens, return_logits=True), logits)
        torch.testing.assert_close(xlmr.predict("topic", tokens), F.log_softmax(logits, dim=-1))

    xlmr.register_classification_head("topic", num_classes=2)  # re-registering replaces, as fairseq
    assert xlmr.predict("topic", tokens).shape == (1, 2)
    with pytest.raises(ValueError, match="no classification head named 'missing'.*'topic'"):
        xlmr.predict("missing", tokens)
    with pytest.raises(ValueError, match="num_classes"):
        xlmr.register_classification_head("broken")


@pytest.fixture(scope="module")
def converted_with_heads(tmp_path_factory, tiny_sentencepiece):
    from conversion import convert_fairseq_checkpoint
    from conversion.synthetic import build_fairseq_checkpoint

    root = tmp_path_factory.mktemp("converted_heads")
    heads = {"mnli": 3, "sentiment": 2}
    source = build_fairseq_checkpoint(
        root / "fairseq", tiny_config(), sentencepiece_model=tiny_sentencepiece, classification_heads=heads
    )
    labels = ["entailment", "neutral", "contradiction"]
    convert_fairseq_checkpoint(source, root / "repo", head="mnli", labels=labels, log=lambda _: None)
    return root / "repo", expected_fairseq_state(source, tiny_config(), heads), labels


def test_heads_of_a_converted_fairseq_checkpoint_keep_their_names_and_outputs(converted_with_heads):
    from conversion import reference_forward

    repo, fairseq_state, labels = converted_with_heads
    xlmr = XLMRHubInterface.from_pretrained(str(repo)).eval()
    assert set(xlmr.classification_heads) == {"mnli", "sentiment"}
    tokens = xlmr.encode("the quick brown fox", "le petit chat")
    reference = reference_forward(fairseq_state, tokens[None], num_heads=4, heads=("mnli", "sentiment"))
    with torch.no_grad():
        for name in ("mnli", "sentiment"):
            expected = F.log_softmax(reference.head_logits[name].float(), dim=-1)
            torch.testing.assert_close(xlmr.predict(name, tokens), expected, atol=1e-5, rtol=1e-5)
        all_layers = xlmr.extract_features(tokens, return_all_hiddens=True)
    for ours, theirs in zip(all_layers, reference.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)
    result = xlmr.classify(["the quick brown fox"])[0]
    assert list(result["probabilities"]) == labels  # labels given at conversion time
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_fill_mask_matches_the_fairseq_lm_head_on_a_converted_checkpoint(converted_with_heads):
    from conversion import reference_forward

    repo, fairseq_state, _ = converted_with_heads
    xlmr = XLMRHubInterface.from_pretrained(str(repo)).eval()
    filled = xlmr.fill_mask("the quick <mask> fox", topk=3)
    tokens = torch.tensor(
        [
            [
                0,
                *xlmr.tokenizer("the quick", add_special_tokens=False)["input_ids"],
                xlmr.tokenizer.mask_token_id,
                *xlmr.tokenizer("fox", add_special_tokens=False)["input_ids"],
                2,
            ]
        ]
    )
    masked = int((tokens[0] == xlmr.tokenizer.mask_token_id).nonzero())
    probabilities = reference_forward(fairseq_state, tokens, num_heads=4).lm_logits[0, masked].float().softmax(-1)
    values, indices = probabilities.topk(3)
    assert [probability for _, probability, _ in filled] == pytest.approx(values.tolist(), abs=1e-5)
    for (sentence, _, token), piece in zip(filled, xlmr.tokenizer.convert_ids_to_tokens(indices.tolist())):
        word = piece.replace("\u2581", " ")
        assert token == word.rstrip() if piece.startswith("\u2581") else token == word.strip()
        assert sentence == "the quick" + token + " fox"


# ---------------------------------------------------------------------------------------- fill_mask


def test_fill_mask_spacing_of_word_initial_and_inner_pieces(xlmr):
    """fairseq#1306: a word-initial piece '▁world' fills as ' world'; an inner piece joins the word."""
    bias = xlmr.model.lm_head.bias
    original = bias.detach().clone()
    world, inner = xlmr.tokenizer.convert_tokens_to_ids(["\u2581world", "world"])
    try:
        with torch.no_grad():
            bias[world] = 50.0
        top = xlmr.fill_mask("Hello <mask>!", topk=2)
        assert top[0][0] == "Hello world!" and top[0][2] == " world" and top[0][1] > 0.99
        assert len(top) == 2 and top[0][1] >= top[1][1]
        with torch.no_grad():
            bias[world], bias[inner] = original[world], 50.0
        assert xlmr.fill_mask("Hello <mask>!", topk=1)[0][:3:2] == ("Helloworld!", "world")
    finally:
        with torch.no_grad():
            bias.copy_(original)


def test_fill_mask_needs_exactly_one_mask_and_keeps_train_mode(xlmr):
    for text in ("no mask here", "<mask> and <mask>"):
        with pytest.raises(ValueError, match="one <mask>"):
            xlmr.fill_mask(text)
    xlmr.train()
    try:
        assert xlmr.fill_mask("Hello <mask>!", topk=1)[0][1] == xlmr.fill_mask("Hello <mask>!", topk=1)[0][1]
        assert xlmr.model.training
    finally:
        xlmr.eval()


# ---------------------------------------------------------------------------------------- word alignment


def test_features_aligned_to_words_share_tokens_like_fairseq(xlmr):
    sentence = "Hello world! C'est très bien."
    aligned = xlmr.extract_features_aligned_to_words(sentence)
    assert aligned.words == ["<s>", "Hello", "world", "!", "C", "'", "est", "très", "bien", ".", "</s>"]
    assert [sentence[start:end] for start, end in aligned.spans[1:-1]] == aligned.words[1:-1]
    features = xlmr.extract_features(xlmr.encode(sentence))[0]
    assert aligned.features.shape == (len(aligned.words), 32)
    # fairseq's invariant: word rows redistribute the token features without losing any.
    torch.testing.assert_close(aligned.features.sum(0), features.sum(0), atol=1e-4, rtol=1e-5)
    pieces = xlmr.tokenizer.convert_ids_to_tokens(xlmr.encode(sentence).tolist())
    assert pieces[1] == "\u2581Hello"  # a one-piece word gets that piece's features
    torch.testing.assert_close(aligned.features[1], features[1])
    layers = xlmr.extract_features_aligned_to_words(sentence, return_all_hiddens=True).features
    assert len(layers) == 3 and torch.equal(layers[-1], aligned.features)


def test_word_alignment_splits_a_shared_token_evenly_and_gives_lone_spaces_to_the_next_word():
    # tokens: "ab" covering words 0 and 1, a lone space, then "c"
    matrix = word_alignment_matrix([(0, 2), (2, 3), (3, 4)], [(0, 1), (1, 2), (3, 4)])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [0, 0.5, 0, 0, 0],
            [0, 0.5, 0, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    torch.testing.assert_close(matrix, expected)


# ---------------------------------------------------------------------------------------- loading, dtype, device


def test_module_api_eval_train_device_and_precision(xlmr):
    xlmr = XLMRHubInterface(copy.deepcopy(xlmr.model), xlmr.tokenizer)  # leave the shared one in fp32
    assert xlmr.device == torch.device("cpu")
    assert xlmr.eval() is xlmr and not xlmr.model.training
    assert xlmr.train() is xlmr and xlmr.model.training
    xlmr.eval()
    tokens = xlmr.encode(SENTENCES[2])
    with torch.no_grad():
        reference = xlmr.extract_features(tokens)
        for convert, dtype in ((xlmr.bfloat16, torch.bfloat16), (xlmr.half, torch.float16)):
            assert convert() is xlmr and xlmr.dtype == dtype
            features = xlmr.extract_features(tokens)
            assert features.dtype == dtype and torch.isfinite(features).all()
            assert cosine(features.float(), reference) >= 0.999
        assert xlmr.to(torch.float32) is xlmr and xlmr.extract_features(tokens).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["bf16", torch.float16])
def test_from_pretrained_dtype_and_device_map_auto(tiny_repo, dtype):
    xlmr = XLMRHubInterface.from_pretrained(str(tiny_repo), dtype=dtype, device_map="auto").eval()
    assert xlmr.dtype == parse_dtype(dtype)
    assert {parameter.device.type for parameter in xlmr.parameters()} == {"cpu"}  # the only device here
    with torch.no_grad():
        features = xlmr.extract_features(xlmr.encode(SENTENCES[3]))
    assert torch.isfinite(features).all()


def test_bad_dtype_and_missing_model_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported dtype 'int4'.*fp32.*fp16.*bf16.*int8"):
        parse_dtype("int4")
    with pytest.raises(OSError, match="not found"):
        XLMRHubInterface.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(OSError, match="no config.json"):
        XLMRHubInterface.from_pretrained(str(tmp_path))


def test_stock_transformers_repos_load_too(real_tokenizer_json, tmp_path):
    """A repo written by stock transformers (XLMRobertaForSequenceClassification + its tokenizer)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(1)
    labels = {0: "negative", 1: "positive"}
    config = XLMRobertaConfig(
        **tiny_config_kwargs(vocab_size=REAL_VOCAB), id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    stock = XLMRobertaForSequenceClassification(config).eval()
    stock.save_pretrained(tmp_path)
    fast_stock_tokenizer(real_tokenizer_json).save_pretrained(tmp_path)

    xlmr = XLMRHubInterface.from_pretrained(str(tmp_path)).eval()
    assert isinstance(xlmr.model, XLMRForSequenceClassification)
    texts = SENTENCES[:3]
    results = xlmr.classify(texts)
    for text, result in zip(texts, results):
        with torch.no_grad():
            expected = stock(**xlmr.tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        assert list(result["probabilities"]) == ["negative", "positive"]
        assert list(result["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)
        assert result["label"] == labels[int(expected.argmax())]
    with pytest.raises(ValueError, match="no LM head"):
        xlmr.fill_mask("Hello <mask>!")


def test_interface_is_exported_lazily():
    import modeling_xlmr

    assert modeling_xlmr.XLMRHubInterface is XLMRHubInterface
    assert shutil.which("xlmr")  # console script installed
