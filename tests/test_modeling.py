"""The model classes against stock transformers' XLM-RoBERTa, which is the reference here."""

from __future__ import annotations

import zlib

import pytest
import torch
import transformers
from transformers.initialization import no_init_weights

from modeling_xlmr import (
    XLMRConfig,
    XLMRForMaskedLM,
    XLMRForMultipleChoice,
    XLMRForQuestionAnswering,
    XLMRForSequenceClassification,
    XLMRForTokenClassification,
    XLMRModel,
)
from tests.support.models import cosine, random_padded_batch, tiny_config_kwargs
from tests.support.processes import run_without_package

HEADS = {
    "base": (transformers.XLMRobertaModel, XLMRModel),
    "masked_lm": (transformers.XLMRobertaForMaskedLM, XLMRForMaskedLM),
    "sequence_classification": (transformers.XLMRobertaForSequenceClassification, XLMRForSequenceClassification),
    "token_classification": (transformers.XLMRobertaForTokenClassification, XLMRForTokenClassification),
    "question_answering": (transformers.XLMRobertaForQuestionAnswering, XLMRForQuestionAnswering),
    "multiple_choice": (transformers.XLMRobertaForMultipleChoice, XLMRForMultipleChoice),
}
LENGTHS = [9, 4, 7, 2]


def _inputs_for(head: str, vocab_size: int, num_labels: int) -> dict:
    input_ids, attention_mask = random_padded_batch(LENGTHS, vocab_size, seed=1)
    batch, width = input_ids.shape
    generator = torch.Generator().manual_seed(2)
    if head == "multiple_choice":
        other_ids, other_mask = random_padded_batch(LENGTHS[::-1], vocab_size, seed=3)
        return {
            "input_ids": torch.stack([input_ids, other_ids], dim=1),
            "attention_mask": torch.stack([attention_mask, other_mask], dim=1),
            "labels": torch.tensor([0, 1, 1, 0]),
        }
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if head == "masked_lm":
        inputs["labels"] = torch.where(attention_mask.bool(), input_ids, -100)
    elif head == "sequence_classification":
        inputs["labels"] = torch.randint(0, num_labels, (batch,), generator=generator)
    elif head == "token_classification":
        labels = torch.randint(0, num_labels, (batch, width), generator=generator)
        inputs["labels"] = torch.where(attention_mask.bool(), labels, -100)
    elif head == "question_answering":
        inputs["start_positions"] = torch.tensor([1, 2, 0, 1])
        inputs["end_positions"] = torch.tensor([3, 2, 5, 1])
    return inputs


def _stock_and_ours(head: str, config_kwargs: dict, seed: int = 0):
    stock_class, our_class = HEADS[head]
    if head == "question_answering":
        config_kwargs = {**config_kwargs, "num_labels": 2}  # start and end logits
    torch.manual_seed(seed)
    stock = stock_class(transformers.XLMRobertaConfig(**config_kwargs)).eval()
    ours = our_class(XLMRConfig(**config_kwargs)).eval()
    incompatible = ours.load_state_dict(stock.state_dict(), strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert set(ours.state_dict()) == set(stock.state_dict())
    return stock, ours


def _real_tokens(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of a per-token output that belong to real tokens (pad positions mean nothing in either model:
    stock computes values there, the packed path returns zeros). Per-sequence outputs are left whole."""
    if mask is None:
        return tensor
    flat = mask.reshape(-1, mask.shape[-1]).bool()  # multiple choice flattens (batch, choices) into rows
    if tensor.dim() >= 2 and tuple(tensor.shape[:2]) == tuple(flat.shape):
        return tensor[flat]
    return tensor


def _assert_same_outputs(stock_out, our_out, atol: float, mask: torch.Tensor | None = None) -> None:
    """Equal outputs; with `mask`, per-token outputs are compared on real tokens only (the packed path)."""
    for name in ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "pooler_output"):
        expected = getattr(stock_out, name, None)
        if expected is None:
            continue
        actual = getattr(our_out, name)
        torch.testing.assert_close(_real_tokens(actual, mask), _real_tokens(expected, mask), atol=atol, rtol=0, msg=name)
    assert len(our_out.hidden_states) == len(stock_out.hidden_states)
    for layer, (ours, theirs) in enumerate(zip(our_out.hidden_states, stock_out.hidden_states)):
        torch.testing.assert_close(
            _real_tokens(ours, mask), _real_tokens(theirs, mask), atol=atol, rtol=0, msg=f"hidden state {layer}"
        )


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_matches_stock_on_tiny_config(head, attn_implementation):
    kwargs = tiny_config_kwargs(num_labels=3, attn_implementation=attn_implementation)
    stock, ours = _stock_and_ours(head, kwargs)
    inputs = _inputs_for(head, kwargs["vocab_size"], num_labels=3)
    with torch.no_grad():
        expected = stock(**inputs, output_hidden_states=True)
        actual = ours(**inputs, output_hidden_states=True)  # packed: the default for inference
        padded = ours(**inputs, output_hidden_states=True, unpad_inputs=False)
    _assert_same_outputs(expected, actual, atol=1e-5, mask=inputs["attention_mask"])
    _assert_same_outputs(expected, padded, atol=1e-5)  # the padded path is stock's, pad positions included
    if "labels" in inputs or "start_positions" in inputs:
        assert actual.loss is not None and torch.isfinite(actual.loss)


BASE_KWARGS = {
    key: value
    for key, value in XLMRConfig().to_diff_dict().items()
    if key not in ("auto_map", "transformers_version", "model_type")
}


@pytest.fixture(scope="module")
def base_size_weights() -> dict[str, torch.Tensor]:
    """Random xlmr.base-shaped weights (vocab 250002) initialised by stock transformers, made once."""
    torch.manual_seed(0)
    return transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**BASE_KWARGS)).state_dict()


def _load_base_size(model_class, config, weights: dict[str, torch.Tensor]):
    """Build without the (slow) random init, then load `weights`; head parameters get fresh random values."""
    with no_init_weights():
        model = model_class(config)
    state = {}
    for name, tensor in model.state_dict().items():
        shared = weights.get(name, weights.get("roberta." + name))
        if shared is None:  # seeded by name, so stock and ours draw the same values
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            shared = torch.randn(tensor.shape, generator=generator) * 0.02
        state[name] = shared
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_matches_stock_on_base_size(head, base_size_weights):
    stock_class, our_class = HEADS[head]
    kwargs = {**BASE_KWARGS, "num_labels": 2 if head == "question_answering" else 3}
    stock = _load_base_size(stock_class, transformers.XLMRobertaConfig(**kwargs), base_size_weights)
    ours = _load_base_size(our_class, XLMRConfig(**kwargs), base_size_weights)
    assert ours.config.hidden_size == 768 and ours.config.num_hidden_layers == 12
    assert ours.config.vocab_size == 250002
    for name, tensor in stock.state_dict().items():  # the very same weights on both sides
        assert torch.equal(ours.state_dict()[name], tensor), name
    inputs = _inputs_for(head, 250002, num_labels=3)
    with torch.no_grad():
        expected = stock(**inputs, output_hidden_states=True)
        actual = ours(**inputs, output_hidden_states=True)
    _assert_same_outputs(expected, actual, atol=1e-5, mask=inputs["attention_mask"])


def test_output_attentions_and_tuple_outputs_match_stock():
    stock, ours = _stock_and_ours("sequence_classification", tiny_config_kwargs(attn_implementation="eager"))
    inputs = _inputs_for("sequence_classification", 120, num_labels=2)
    with torch.no_grad():
        expected = stock(**inputs, output_attentions=True)
        actual = ours(**inputs, output_attentions=True)
        as_tuple = ours(**inputs, return_dict=False)
    for ours_layer, stock_layer in zip(actual.attentions, expected.attentions, strict=True):
        torch.testing.assert_close(ours_layer, stock_layer, atol=1e-6, rtol=0)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected.loss)
    torch.testing.assert_close(as_tuple[1], expected.logits)


def test_config_defaults_are_xlmr_base_and_large_is_documented():
    base, large = XLMRConfig(), XLMRConfig.large()
    assert (base.vocab_size, base.hidden_size, base.num_hidden_layers, base.num_attention_heads) == (250002, 768, 12, 12)
    assert (base.intermediate_size, base.max_position_embeddings, base.type_vocab_size) == (3072, 514, 1)
    assert (base.layer_norm_eps, base.pad_token_id, base.bos_token_id, base.eos_token_id) == (1e-5, 1, 0, 2)
    assert base.hidden_act == "gelu" and base.max_sequence_length == 512
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.intermediate_size) == (
        1024, 24, 16, 4096,
    )
    # Parameter counts of the released models (fairseq README: 250M / 560M; transformers#11834: 278,044,162).
    with torch.device("meta"):
        assert sum(p.numel() for p in XLMRModel(base, add_pooling_layer=True).parameters()) == 278_043_648
        assert 555e6 < sum(p.numel() for p in XLMRModel(large).parameters()) < 565e6


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible"),
        ({"pad_token_id": 250002}, "outside the vocabulary"),
        ({"max_position_embeddings": 2}, "max_position_embeddings"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ],
)
def test_impossible_config_values_raise_clear_errors(overrides, message):
    with pytest.raises(Exception, match=message):
        XLMRConfig(**overrides)


def test_more_than_512_tokens_raises_value_error_naming_the_limit():
    model = XLMRModel(XLMRConfig(**tiny_config_kwargs())).eval()
    ok_ids, _ = random_padded_batch([512], 120)
    model(ok_ids)  # exactly 512 real tokens is allowed
    too_long, _ = random_padded_batch([513], 120)
    with pytest.raises(ValueError, match="at most 512"):
        model(too_long)
    # Padding does not count: 512 real tokens inside a 600-wide padded batch is fine.
    padded, mask = random_padded_batch([512, 600 - 88], 120, padding_side="left")
    model(padded, attention_mask=mask)


def test_token_type_id_of_one_raises_a_clear_error():
    model = XLMRModel(XLMRConfig(**tiny_config_kwargs())).eval()
    input_ids, _ = random_padded_batch([5], 120)
    with pytest.raises(ValueError, match="type_vocab_size=1"):
        model(input_ids, token_type_ids=torch.ones_like(input_ids))


@pytest.mark.parametrize("unpad_inputs", [False, True])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_batch_invariance_alone_right_and_left_padded(unpad_inputs, attn_implementation):
    torch.manual_seed(0)
    config = XLMRConfig(**tiny_config_kwargs(attn_implementation=attn_implementation))
    model = XLMRModel(config).eval()
    right_ids, right_mask = random_padded_batch([6, 11, 3], 120, padding_side="right", seed=5)
    left_ids, left_mask = random_padded_batch([6, 11, 3], 120, padding_side="left", seed=5)
    with torch.no_grad():
        right = model(right_ids, attention_mask=right_mask, unpad_inputs=unpad_inputs).last_hidden_state
        left = model(left_ids, attention_mask=left_mask, unpad_inputs=unpad_inputs).last_hidden_state
        for row, length in enumerate([6, 11, 3]):
            alone = model(right_ids[row : row + 1, :length]).last_hidden_state[0]
            torch.testing.assert_close(right[row, :length], alone, atol=1e-5, rtol=0)
            torch.testing.assert_close(left[row, -length:], alone, atol=1e-5, rtol=0)


def test_inputs_embeds_path_uses_fairseq_positions_even_when_left_padded():
    torch.manual_seed(0)
    model = XLMRModel(XLMRConfig(**tiny_config_kwargs())).eval()
    input_ids, mask = random_padded_batch([4, 8], 120, padding_side="left")
    with torch.no_grad():
        from_ids = model(input_ids, attention_mask=mask).last_hidden_state
        embeds = model.get_input_embeddings()(input_ids)
        from_embeds = model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(from_embeds[mask.bool()], from_ids[mask.bool()], atol=1e-6, rtol=0)


def test_unpadded_path_matches_stock_on_real_tokens():
    stock, ours = _stock_and_ours("masked_lm", tiny_config_kwargs())
    input_ids, mask = random_padded_batch([7, 1, 12, 3], 120, padding_side="left", seed=9)
    with torch.no_grad():
        expected = stock(input_ids, attention_mask=mask, output_hidden_states=True)
        actual = ours(input_ids, attention_mask=mask, output_hidden_states=True, unpad_inputs=True)
    real = mask.bool()
    for ours_layer, stock_layer in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours_layer[real], stock_layer[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.logits[real], expected.logits[real], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def base_size_fp32_model(base_size_weights):
    return _load_base_size(XLMRModel, XLMRConfig(), base_size_weights)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("unpad_inputs", [False, True])
def test_half_precision_is_finite_and_close_to_fp32_on_base_size(base_size_fp32_model, dtype, unpad_inputs):
    input_ids, mask = random_padded_batch([20, 9, 14], 250002, seed=4)
    # A row that is all padding: SDPA / softmax must not turn it into NaN.
    input_ids = torch.cat([input_ids, torch.ones_like(input_ids[:1])])
    mask = torch.cat([mask, torch.zeros_like(mask[:1])])
    with no_init_weights():
        half_model = XLMRModel(base_size_fp32_model.config).eval()
    half_model.load_state_dict(base_size_fp32_model.state_dict())
    half_model.to(dtype)
    with torch.no_grad():
        reference = base_size_fp32_model(input_ids, attention_mask=mask).last_hidden_state
        half = half_model(input_ids, attention_mask=mask, unpad_inputs=unpad_inputs, output_hidden_states=True)
    assert all(torch.isfinite(state).all() for state in half.hidden_states)
    assert torch.isfinite(half.last_hidden_state).all()
    real = mask.bool()
    assert cosine(half.last_hidden_state[real].float(), reference[real]) >= 0.999
    for row in range(3):
        assert cosine(half.last_hidden_state[row][real[row]].float(), reference[row][real[row]]) >= 0.999


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_all_padding_rows_stay_finite_in_half_precision(attn_implementation, dtype):
    model = XLMRForSequenceClassification(XLMRConfig(**tiny_config_kwargs(attn_implementation=attn_implementation)))
    model = model.eval().to(dtype)
    input_ids = torch.tensor([[0, 5, 6, 2], [1, 1, 1, 1]])
    with torch.no_grad():
        out = model(input_ids, attention_mask=input_ids.ne(1).long(), output_hidden_states=True)
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(state).all() for state in out.hidden_states)


def test_save_pretrained_writes_remote_code_and_full_auto_map(tmp_path):
    model = XLMRForMaskedLM(XLMRConfig(**tiny_config_kwargs()))
    model.save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "xlm-roberta"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_xlmr.XLMRConfig",
        "AutoModel": "modeling_xlmr.XLMRModel",
        "AutoModelForMaskedLM": "modeling_xlmr.XLMRForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_xlmr.XLMRForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_xlmr.XLMRForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_xlmr.XLMRForQuestionAnswering",
        "AutoModelForMultipleChoice": "modeling_xlmr.XLMRForMultipleChoice",
    }
    for name in ("model.safetensors", "configuration_xlmr.py", "modeling_xlmr.py"):
        assert (tmp_path / name).is_file(), name


def test_our_save_loads_in_stock_and_stock_save_loads_in_ours(tmp_path):
    stock, ours = _stock_and_ours("masked_lm", tiny_config_kwargs())
    input_ids, mask = random_padded_batch([5, 9], 120)
    ours.save_pretrained(tmp_path / "ours")
    stock.save_pretrained(tmp_path / "stock")

    reloaded_stock, info = transformers.AutoModelForMaskedLM.from_pretrained(
        tmp_path / "ours", output_loading_info=True
    )
    assert type(reloaded_stock) is transformers.XLMRobertaForMaskedLM
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    reloaded_ours, info = XLMRForMaskedLM.from_pretrained(tmp_path / "stock", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))

    with torch.no_grad():
        expected = stock(input_ids, attention_mask=mask).logits[mask.bool()]
        for model in (reloaded_stock.eval(), reloaded_ours.eval()):
            actual = model(input_ids, attention_mask=mask).logits[mask.bool()]
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # The LM decoder stays tied to the word embeddings after a reload, as in fairseq.
    assert reloaded_ours.lm_head.decoder.weight.data_ptr() == reloaded_ours.roberta.get_input_embeddings().weight.data_ptr()


def test_remote_code_builds_our_classes_in_a_process_that_cannot_import_the_package(tmp_path):
    torch.manual_seed(0)
    model = XLMRForSequenceClassification(XLMRConfig(**tiny_config_kwargs(num_labels=3))).eval()
    model.save_pretrained(tmp_path)
    input_ids, mask = random_padded_batch([6, 3], 120)
    with torch.no_grad():
        expected = model(input_ids, attention_mask=mask).logits
    torch.save({"input_ids": input_ids, "mask": mask, "expected": expected}, tmp_path / "probe.pt")
    result = run_without_package(
        f"""
        import torch, transformers
        from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForMultipleChoice,
            AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoModelForTokenClassification)
        path = {str(tmp_path)!r}
        for auto in (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                     AutoModelForTokenClassification, AutoModelForQuestionAnswering, AutoModelForMultipleChoice):
            built = auto.from_pretrained(path, trust_remote_code=True)
            assert type(built).__module__.startswith("transformers_modules."), type(built).__module__
            print(auto.__name__, type(built).__name__)
        probe = torch.load(path + "/probe.pt")
        remote = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
        stock = AutoModelForSequenceClassification.from_pretrained(path).eval()
        assert type(stock) is transformers.XLMRobertaForSequenceClassification
        with torch.no_grad():
            for m in (remote, stock):
                got = m(probe["input_ids"], attention_mask=probe["mask"]).logits
                torch.testing.assert_close(got, probe["expected"], atol=1e-5, rtol=0)
        print("OK")
        """
    )
    lines = result.stdout.split("\n")
    assert "AutoModelForSequenceClassification XLMRForSequenceClassification" in lines
    assert "AutoModelForMultipleChoice XLMRForMultipleChoice" in lines
    assert "AutoConfig XLMRConfig" in lines
    assert lines[-2] == "OK"


def test_device_map_auto_and_torch_dtype_loading_on_cpu(tmp_path):
    torch.manual_seed(0)
    model = XLMRModel(XLMRConfig(**tiny_config_kwargs())).eval()
    model.save_pretrained(tmp_path)
    placed = XLMRModel.from_pretrained(tmp_path, device_map="auto", dtype=torch.bfloat16)
    assert placed.dtype == torch.bfloat16
    assert {p.device.type for p in placed.parameters()} == {"cpu"}
    device_map = getattr(placed, "hf_device_map", None)  # only set when accelerate split the model
    assert device_map is None or set(map(str, device_map.values())) == {"cpu"}
    input_ids, mask = random_padded_batch([5, 2], 120)
    with torch.no_grad():
        out = placed(input_ids, attention_mask=mask).last_hidden_state
        reference = model(input_ids, attention_mask=mask).last_hidden_state
    assert cosine(out.float()[mask.bool()], reference[mask.bool()]) >= 0.999


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = XLMRConfig(**tiny_config_kwargs(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = XLMRForSequenceClassification(config).train()
    input_ids, mask = random_padded_batch([6, 4], 120)
    labels = torch.tensor([0, 1])

    def gradients():
        model.zero_grad()
        model(input_ids, attention_mask=mask, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=0, msg=name)


def test_trainer_steps_lower_the_loss(tmp_path):
    from datasets import Dataset

    torch.manual_seed(0)
    config = XLMRConfig(**tiny_config_kwargs(num_labels=2))
    model = XLMRForSequenceClassification(config)
    # A learnable rule: the label is which of two marker tokens follows <s>.
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(64):
        tokens = torch.randint(10, 120, (int(torch.randint(3, 10, (1,), generator=generator)),), generator=generator)
        label = index % 2
        tokens[0] = 7 if label else 8
        ids = [0, *tokens.tolist(), 2]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label})
    dataset = Dataset.from_list(rows)

    def collate(features):
        width = max(len(f["input_ids"]) for f in features)
        pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(f["input_ids"], 1) for f in features]),
            "attention_mask": torch.tensor([pad(f["attention_mask"], 0) for f in features]),
            "labels": torch.tensor([f["labels"] for f in features]),
        }

    def mean_loss():
        model.eval()
        with torch.no_grad():
            return float(model(**collate(rows)).loss)

    before = mean_loss()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=10, learning_rate=5e-3,
        report_to="none", save_strategy="no", logging_steps=5, use_cpu=True, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    trainer.train()
    after = mean_loss()
    assert after < before * 0.5, (before, after)
