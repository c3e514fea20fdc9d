"""int8 inference (`quantize_for_inference`, `dtype="int8"`, `--dtype int8`): within the accuracy bound of stock
fp32 on random weights, on the int8 kernels exactly where the fast path runs, and nowhere else."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from modeling_xlmr import XLMRConfig, XLMRHubInterface, XLMRModel, fast_path
from modeling_xlmr.cli import main
from modeling_xlmr.quantization import PROJECTIONS, SMALL_ROWS, Int8Linear, int8_unavailable_reason
from tests.support.cli import assert_one_line_error, run_xlmr
from tests.support.models import TEXTS, build_tiny_repo, fast_stock_tokenizer, random_padded_batch, tiny_config_kwargs

pytestmark = pytest.mark.skipif(int8_unavailable_reason("cpu") is not None, reason="no oneDNN int8 kernels here")
BASE_LAYERS = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 1000}


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def int8_layers(model: nn.Module) -> list[set[str]]:
    """Per encoder layer, the projections whose prepared kernels are int8 (after a forward)."""
    prepared = [fast_path._PREPARED.get(layer) for layer in model.base_model.encoder.layer]
    return [
        set() if p is None else {name for name in PROJECTIONS if isinstance(getattr(p, name), Int8Linear)}
        for p in prepared
    ]


@pytest.fixture(scope="module")
def tiny() -> XLMRModel:
    torch.manual_seed(0)
    return XLMRModel(XLMRConfig(**tiny_config_kwargs()), add_pooling_layer=False).eval()


def test_base_size_int8_is_within_the_cosine_bound_of_stock_fp32():
    kwargs = tiny_config_kwargs(num_hidden_layers=12, **BASE_LAYERS)
    torch.manual_seed(7)
    stock = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**kwargs), add_pooling_layer=False).eval()
    ours = XLMRModel(XLMRConfig(**kwargs), add_pooling_layer=False).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    float_state = {name: tensor.clone() for name, tensor in ours.state_dict().items()}
    assert ours.quantize_for_inference() is ours

    input_ids, mask = random_padded_batch([40, 7, 25, 90, 3, 61], 1000, seed=12)
    single = input_ids[:1, :40]  # a batch of one, no mask: int8 too
    with torch.inference_mode():
        reference = stock(input_ids, attention_mask=mask).last_hidden_state[mask.bool()]
        int8 = ours(input_ids, attention_mask=mask).last_hidden_state[mask.bool()]
        single_int8 = ours(single).last_hidden_state[0]
    assert int8_layers(ours) == [set(PROJECTIONS)] * 12
    similarity = token_cosine(int8, reference)
    assert similarity.mean() >= 0.999 and similarity.min() >= 0.998, (similarity.mean(), similarity.min())
    assert (int8 - reference).abs().max() > 1e-3  # really quantised, not the fp32 kernels
    assert token_cosine(single_int8, reference[:40]).mean() >= 0.999
    assert all(torch.equal(tensor, float_state[name]) for name, tensor in ours.state_dict().items())  # float weights


def test_few_rows_run_whichever_int8_gemm_measured_faster_and_both_are_within_the_bound():
    torch.manual_seed(3)
    weight, bias = torch.randn(3072, 768) * 0.02, torch.randn(3072) * 0.1
    linear = Int8Linear(weight, bias, 1024)
    for rows in (1, 16, 48, SMALL_ROWS):
        inputs = torch.randn(rows, 768)
        reference = torch.nn.functional.linear(inputs, weight, bias)
        per_token, one_scale = linear._gemm(inputs), linear._gemm_few_rows(inputs)  # oneDNN, fbgemm
        for outputs in (per_token, one_scale):
            similarity = token_cosine(outputs, reference)
            assert similarity.min() >= 0.999, (rows, similarity.min())
        chosen = linear(inputs)
        assert torch.equal(chosen, per_token) or torch.equal(chosen, one_scale)


@pytest.mark.parametrize("width", [768, 3072])
def test_activation_codes_are_exactly_rounded_per_token(width):
    """Codes are round(x / s) + zero point, round half to even, against a float64 reference of the same scales;
    rows include every level, exact halves and tokens whose magnitudes differ by orders of magnitude."""
    torch.manual_seed(4)
    linear = Int8Linear(torch.randn(64, width), None, 1024)
    levels, zero_point = linear.levels, linear.zero_point
    inputs = torch.randn(256, width) * torch.logspace(-6, 6, 256)[:, None]
    steps = torch.arange(-2 * levels, 2 * levels + 1, dtype=torch.float32) / 2  # every level and every half
    inputs[0, : steps.numel()] = steps
    inputs[0, steps.numel() :] = 0
    scratch = inputs.clone()  # the rounding may also run in the inputs' own memory, with the same codes
    codes, token_scale = linear.quantize_activations(inputs)
    scratch_codes, scratch_scale = linear.quantize_activations(scratch, scratch=True)
    assert torch.equal(scratch_codes, codes) and torch.equal(scratch_scale, token_scale)
    assert codes.dtype == torch.uint8 and token_scale.shape == (256, 1)
    assert torch.allclose(token_scale[:, 0], inputs.abs().amax(dim=1) / levels, rtol=1e-6, atol=0)
    exact = torch.round(inputs.double() * token_scale.reciprocal().double()) + zero_point
    assert torch.equal(codes.long(), exact.long())
    assert codes.min() >= 1 and codes.max() <= 2 * levels + 1
    assert torch.equal(codes[0, : steps.numel()].long(), torch.round(steps.double()).long() + zero_point)


class ScaledLinear(nn.Linear):
    def forward(self, inputs):
        return 2 * super().forward(inputs)


class LastHiddenState(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.mark.parametrize("case", ["training", "autograd", "wrapped_linear", "forward_hook", "attentions", "trace"])
def test_int8_steps_aside_where_the_fast_path_does(tiny, case):
    float_model = copy.deepcopy(tiny)
    if case == "wrapped_linear":
        replacement = ScaledLinear(32, 64)
        replacement.load_state_dict(float_model.encoder.layer[0].intermediate.dense.state_dict())
        float_model.encoder.layer[0].intermediate.dense = replacement
    elif case == "forward_hook":
        float_model.encoder.layer[0].output.dense.register_forward_hook(lambda module, inputs, output: output * 0.5)
    int8_model = copy.deepcopy(float_model).quantize_for_inference()
    input_ids, mask = random_padded_batch([5, 9, 3, 7], 120)

    changed_layer_only = case in ("wrapped_linear", "forward_hook")  # layer 0 steps aside, layer 1 runs int8

    def run(model):
        fast_path.clear_inference_cache(model)
        model.train(case == "training")
        if case == "trace":
            return torch.export.export(LastHiddenState(model), (input_ids, mask)).module()(input_ids, mask)
        with torch.set_grad_enabled(case in ("training", "autograd")):
            output = model(input_ids, attention_mask=mask, output_attentions=case == "attentions",
                           output_hidden_states=True)  # fmt: skip
        return output.hidden_states[1] if changed_layer_only else output.last_hidden_state

    torch.manual_seed(0)
    expected = run(float_model)
    torch.manual_seed(0)  # the same dropout masks in training
    actual = run(int8_model)
    torch.testing.assert_close(actual[mask.bool()], expected[mask.bool()], atol=1e-6, rtol=0)
    assert int8_layers(int8_model) == ([set(), set(PROJECTIONS)] if changed_layer_only else [set(), set()])


def test_exclusions_keep_projections_in_float_and_bad_names_raise(tiny):
    model = copy.deepcopy(tiny)
    input_ids, mask = random_padded_batch([5, 9, 3, 7], 120)
    expectations = [
        ((), [set(PROJECTIONS)] * 2),
        (("ffn_down",), [set(PROJECTIONS) - {"ffn_down"}] * 2),
        (("layer.1",), [set(PROJECTIONS), set()]),
        (("layer.0.qkv", "layer.1.ffn_up"), [set(PROJECTIONS) - {"qkv"}, set(PROJECTIONS) - {"ffn_up"}]),
        (PROJECTIONS, [set(), set()]),  # all four: int8 off, the fp32 kernels again
    ]
    for exclude, expected in expectations:
        model.quantize_for_inference(exclude=exclude)
        with torch.inference_mode():
            model(input_ids, attention_mask=mask)
        assert int8_layers(model) == expected, exclude
    with torch.inference_mode():
        off = model(input_ids, attention_mask=mask).last_hidden_state
        reference = tiny(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
    torch.testing.assert_close(off[mask.bool()], reference[mask.bool()], atol=1e-5, rtol=0)
    for bad in ("ffn", "layer.2", "layer.0.down", "layers.0"):
        with pytest.raises(ValueError, match="cannot exclude .* from int8: name a projection"):
            model.quantize_for_inference(exclude=(bad,))


def test_int8_where_no_int8_backend_exists_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"int8 inference runs on CPU only .* on meta; use dtype='bf16'"):
        copy.deepcopy(tiny).to("meta").quantize_for_inference()


@pytest.fixture(scope="module")
def repo(real_tokenizer_json, tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("int8_repo"), fast_stock_tokenizer(real_tokenizer_json))


def test_cli_and_hub_interface_dtype_int8_write_vectors_within_the_bound(repo, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    common = ["extract", "--model", str(repo), "--input", str(texts), "--pooling", "mean", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "fp32.npy")]) == 0
    assert main([*common, "--output", str(tmp_path / "int8.npy"), "--dtype", "int8"]) == 0
    fp32, int8 = np.load(tmp_path / "fp32.npy"), np.load(tmp_path / "int8.npy")
    assert int8.dtype == np.float32 and int8.shape == fp32.shape == (len(TEXTS), 32)
    similarity = token_cosine(torch.from_numpy(int8), torch.from_numpy(fp32))
    assert similarity.min() >= 0.999 and not np.array_equal(int8, fp32), similarity

    xlmr = XLMRHubInterface.from_pretrained(str(repo), dtype="int8")
    assert xlmr.dtype == torch.float32  # weights stay fp32; the int8 copies live in the fast path's cache
    np.testing.assert_allclose(xlmr.embed(TEXTS, pooling="mean").numpy(), int8, atol=1e-6)
    assert int8_layers(xlmr.model) == [set(PROJECTIONS)] * 2

    status, stderr = run_xlmr(capsys, *common, "--output", tmp_path / "x.npy", "--dtype", "int4")
    assert_one_line_error(status, stderr, "unsupported dtype 'int4'", "int8", command="extract")


def test_hub_int8_runs_int8_on_fairseqs_plain_calls(repo):
    # fairseq users call extract_features / predict with autograd on; there the fast path steps aside, so an int8
    # hub runs them without autograd (int8 GEMMs have none) rather than quietly in fp32.
    fp32, int8 = XLMRHubInterface.from_pretrained(str(repo)), XLMRHubInterface.from_pretrained(str(repo), dtype="int8")
    tokens = int8.encode(TEXTS[0])
    assert torch.is_grad_enabled()
    expected, actual = fp32.extract_features(tokens), int8.extract_features(tokens)
    assert expected.requires_grad and not actual.requires_grad  # fp32 keeps fairseq's autograd
    similarity = token_cosine(actual[0], expected[0].detach())
    assert similarity.min() >= 0.999 and not torch.equal(actual, expected), similarity
    assert int8_layers(int8.model) == [set(PROJECTIONS)] * 2
    for hub in (fp32, int8):
        torch.manual_seed(0)
        hub.register_classification_head("topic", num_classes=3)
    # the head (float) still has autograd: a head can be trained on int8 features
    log_probabilities = int8.predict("topic", tokens).detach()
    torch.testing.assert_close(log_probabilities, fp32.predict("topic", tokens).detach(), atol=0.05, rtol=0)
    features = int8.extract_features(tokens)
    assert torch.equal(int8.predict("topic", tokens, return_logits=True), int8.classification_heads["topic"](features))
