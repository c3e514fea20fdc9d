"""The packed fast path (`unpad_inputs=True`) against stock transformers' padded forward.

Inference (eval mode, no autograd) runs prepared kernels: fused QKV, oneDNN prepacked GEMMs with
fused GELU / residual epilogues, per-sequence or regrouped attention. Every test compares real
tokens against stock `XLMRobertaModel` run on the padded batch, or against our own autograd path.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from modeling_xlmr import XLMRConfig, XLMRModel, fast_path, packing
from tests.support.models import random_padded_batch, tiny_config_kwargs

BASE_LAYERS = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 1000}


def stock_and_ours(seed: int = 0, **overrides) -> tuple[transformers.XLMRobertaModel, XLMRModel]:
    kwargs = tiny_config_kwargs(**overrides)
    torch.manual_seed(seed)
    stock = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**kwargs), add_pooling_layer=False).eval()
    ours = XLMRModel(XLMRConfig(**kwargs), add_pooling_layer=False).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each token's vector (rows of (tokens, hidden))."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def real_rows(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return states[mask.bool()]


def assert_matches_stock(stock, ours, input_ids, mask, atol=1e-5, **kwargs):
    with torch.inference_mode():
        expected = stock(input_ids, attention_mask=mask, output_hidden_states=True)
        actual = ours(input_ids, attention_mask=mask, output_hidden_states=True, unpad_inputs=True, **kwargs)
    assert len(actual.hidden_states) == len(expected.hidden_states)
    for layer, (ours_states, stock_states) in enumerate(zip(actual.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(
            real_rows(ours_states, mask), real_rows(stock_states, mask), atol=atol, rtol=0, msg=f"hidden state {layer}"
        )
        assert not ours_states[~mask.bool()].any(), "pad positions come back as zeros"
    torch.testing.assert_close(actual.last_hidden_state, actual.hidden_states[-1], atol=0, rtol=0)
    return actual


@pytest.fixture(params=["equal_length_groups", "similar_length_groups", "one_regrouped_batch"])
def attention_strategy(request, monkeypatch):
    """Forces each attention strategy of the packed path (the choice is otherwise made per batch)."""
    grouped = request.param != "one_regrouped_batch"
    monkeypatch.setattr(packing, "_PER_SEQUENCE_ABOVE", 0.0 if grouped else float("inf"))
    monkeypatch.setattr(packing, "_GROUP_LENGTH_RATIO", 1.0 if request.param == "equal_length_groups" else 2.0)
    return request.param


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize(
    "lengths",
    [[9, 4, 7, 2], [5, 1, 8, 1], [6], [3, 3, 3], [200, 12, 3, 64]],
    ids=["mixed", "single_tokens", "batch_of_one", "equal_lengths", "long_and_short"],
)
def test_packed_inference_matches_stock_padded(lengths, padding_side, attention_strategy):
    stock, ours = stock_and_ours()
    input_ids, mask = random_padded_batch(lengths, 120, padding_side=padding_side, seed=len(lengths))
    if len(set(lengths)) == 1:  # nothing padded: also exercise an extra all-pad column
        input_ids, mask = torch.nn.functional.pad(input_ids, (0, 1), value=1), torch.nn.functional.pad(mask, (0, 1))
    assert_matches_stock(stock, ours, input_ids, mask)


def test_all_pad_rows_and_batch_of_one_padded(attention_strategy):
    stock, ours = stock_and_ours(seed=1)
    input_ids, mask = random_padded_batch([7, 1, 5, 1], 120, padding_side="left", seed=4)
    input_ids[1], mask[1] = 1, 0  # a row with no real token at all
    actual = assert_matches_stock(stock, ours, input_ids, mask)
    assert not actual.last_hidden_state[1].any()

    single_ids, single_mask = input_ids[2:3], mask[2:3]
    assert_matches_stock(stock, ours, single_ids, single_mask)


def test_every_row_padding_gives_zeros_not_errors():
    _, ours = stock_and_ours()
    input_ids, mask = torch.ones(3, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long)
    with torch.inference_mode():
        out = ours(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state
    assert out.shape == (3, 4, 32) and not out.any()


def test_sequence_of_512_tokens_with_short_ones(attention_strategy):
    stock, ours = stock_and_ours(seed=2)
    input_ids, mask = random_padded_batch([512, 5, 130, 2], 120, seed=5)
    assert_matches_stock(stock, ours, input_ids, mask, atol=2e-5)


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "plain_linear"])
def test_prepared_kernels_are_used_for_inference_and_match_stock(onednn):
    stock, ours = stock_and_ours(seed=3)
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=6)
    fast_path.clear_inference_cache(ours)
    with torch.backends.mkldnn.flags(enabled=onednn):
        assert_matches_stock(stock, ours, input_ids, mask)
        prepared = [fast_path._PREPARED.get(layer) for layer in ours.encoder.layer]
    assert all(p is not None for p in prepared)
    assert all(p.qkv.onednn == (onednn and torch.backends.mkldnn.is_available()) for p in prepared)
    assert prepared[0].qkv.bias.shape == (3 * 32,)  # query, key and value fused into one GEMM


def test_no_prepared_kernels_with_autograd_or_in_training():
    _, ours = stock_and_ours()
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=6)
    fast_path.clear_inference_cache(ours)
    ours(input_ids, attention_mask=mask, unpad_inputs=True)  # grad enabled
    with torch.no_grad():
        ours.train()(input_ids, attention_mask=mask, unpad_inputs=True)
    assert not any(layer in fast_path._PREPARED for layer in ours.encoder.layer)


def test_state_dict_and_deepcopy_are_untouched_by_the_cache():
    _, ours = stock_and_ours()
    keys_before = list(ours.state_dict())
    input_ids, mask = random_padded_batch([9, 4], 120, seed=7)
    with torch.inference_mode():
        expected = ours(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state
    assert list(ours.state_dict()) == keys_before
    clone = copy.deepcopy(ours)  # oneDNN's prepacked tensors cannot be deep-copied: the cache must not be reachable
    with torch.inference_mode():
        torch.testing.assert_close(clone(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state, expected)
    fast_path.clear_inference_cache(ours)
    assert not any(layer in fast_path._PREPARED for layer in ours.encoder.layer)


def test_prepared_weights_follow_load_state_dict_in_place_updates_and_dtype_changes():
    stock, ours = stock_and_ours(seed=4)
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=8)
    assert_matches_stock(stock, ours, input_ids, mask)  # builds the cache from the first weights

    other_stock, _ = stock_and_ours(seed=5)
    ours.load_state_dict(other_stock.state_dict())
    assert_matches_stock(other_stock, ours, input_ids, mask)

    with torch.no_grad():  # an optimizer-style in-place update of one projection
        ours.encoder.layer[1].attention.self.value.weight.mul_(1.5)
        other_stock.encoder.layer[1].attention.self.value.weight.mul_(1.5)
    assert_matches_stock(other_stock, ours, input_ids, mask)

    ours.to(torch.bfloat16)
    with torch.inference_mode():
        packed = ours(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state
        padded = ours(input_ids, attention_mask=mask).last_hidden_state
    assert packed.dtype == torch.bfloat16
    assert token_cosine(real_rows(packed, mask), real_rows(padded, mask)).min() > 0.999


def test_inputs_embeds_token_types_and_explicit_positions_match_padded_path():
    _, ours = stock_and_ours()
    input_ids, mask = random_padded_batch([6, 3, 5], 120, padding_side="left", seed=9)
    embeds = ours.embeddings.word_embeddings(input_ids).detach()
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids) + 2
    with torch.inference_mode():
        for kwargs in ({"inputs_embeds": embeds}, {"input_ids": input_ids, "position_ids": positions,
                                                  "token_type_ids": torch.zeros_like(input_ids)}):
            padded = ours(attention_mask=mask, **kwargs).last_hidden_state
            packed = ours(attention_mask=mask, unpad_inputs=True, **kwargs).last_hidden_state
            torch.testing.assert_close(real_rows(packed, mask), real_rows(padded, mask), atol=1e-5, rtol=0)


def test_training_with_unpad_inputs_gives_the_padded_paths_gradients():
    _, ours = stock_and_ours(seed=6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=10)
    weights = torch.randn(*input_ids.shape, 32, generator=torch.Generator().manual_seed(0))
    gradients = []
    for unpad_inputs in (False, True):
        ours.train().zero_grad()
        states = ours(input_ids, attention_mask=mask, unpad_inputs=unpad_inputs).last_hidden_state
        (states * weights * mask[..., None]).sum().backward()
        gradients.append({name: p.grad.clone() for name, p in ours.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-4, rtol=1e-4, msg=name)


def test_training_with_dropout_runs_on_the_packed_path():
    _, ours = stock_and_ours()
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=11)
    states = ours.train()(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state
    states[mask.bool()].square().mean().backward()
    assert ours.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_base_size_layers_fp32_within_1e4_and_bf16_cosine_targets():
    """The accuracy targets of the fast path on base-size layers (12 x 768, a small vocabulary to stay fast)."""
    stock, ours = stock_and_ours(seed=7, num_hidden_layers=12, **BASE_LAYERS)
    input_ids, mask = random_padded_batch([40, 7, 25, 90, 3, 61], 1000, seed=12)
    bf16_model = copy.deepcopy(ours).to(torch.bfloat16)
    with torch.inference_mode():
        reference = real_rows(stock(input_ids, attention_mask=mask).last_hidden_state, mask)
        fp32 = real_rows(ours(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state, mask)
        bf16 = real_rows(bf16_model(input_ids, attention_mask=mask, unpad_inputs=True).last_hidden_state, mask)
    assert (fp32 - reference).abs().max() <= 1e-4
    similarity = token_cosine(bf16, reference)
    assert similarity.mean() >= 0.9999 and similarity.min() >= 0.999, (similarity.mean(), similarity.min())


def test_packed_batch_moves_between_devices_for_accelerate_hooks():
    _, mask = random_padded_batch([4, 2], 120, seed=13)
    packed = packing.PackedBatch.from_mask(mask)
    moved = packed.to("cpu")
    assert isinstance(moved, packing.PackedBatch) and moved.lengths == (4, 2)
    assert torch.equal(moved.token_indices, packed.token_indices)


def test_model_converted_inside_inference_mode_still_runs_the_fast_path():
    stock, ours = stock_and_ours(seed=8)
    input_ids, mask = random_padded_batch([9, 4, 7, 2], 120, seed=14)
    with torch.inference_mode():  # parameters become inference tensors, which have no version counter
        converted = copy.deepcopy(ours).to(torch.float64).to(torch.float32)
    assert_matches_stock(stock, converted, input_ids, mask)


def test_row_buckets_waste_at_most_a_sixteenth_and_keep_few_shapes():
    sizes = range(1, 16385)
    buckets = [fast_path.bucketed_rows(n) for n in sizes]
    assert all(n <= b <= n + max(15, n // 16) for n, b in zip(sizes, buckets))
    assert buckets[:64] == list(range(1, 65)), "a few rows (a query) run unpadded"
    assert len(set(buckets)) <= 256  # oneDNN caches 1024 kernels: 4 GEMM shapes per bucket fit


def test_packed_batch_slices_are_runs_of_whole_sequences_under_the_token_limit():
    lengths = [5, 0, 9, 3, 12, 4, 4, 1]
    _, mask = random_padded_batch([max(n, 1) for n in lengths], 120, seed=15)
    mask[1] = 0  # a row with no real token
    packed = packing.PackedBatch.from_mask(mask)
    runs = packed.slices(10)
    starts = [0, *torch.tensor(packed.lengths).cumsum(0).tolist()]
    covered = 0
    for rows, run in runs:
        assert rows.start == covered, "runs are consecutive and cover every row"
        covered = rows.stop
        assert rows.start in starts and rows.stop in starts, "a run never splits a sequence"
        assert run.num_tokens == rows.stop - rows.start and sum(run.lengths) == run.num_tokens
        assert run.num_tokens <= 10 or len([n for n in run.lengths if n]) == 1, "only a longer sequence runs alone"
    assert covered == packed.num_tokens == sum(lengths)
    assert [n for _, run in runs for n in run.lengths] == list(packed.lengths)
    assert [run.num_tokens for _, run in runs] == [5, 9, 3, 12, 9]


def test_large_batches_run_in_slices_with_the_same_results(monkeypatch, attention_strategy):
    """On CPU, a packed batch of more than `_SLICE_TOKENS` real tokens runs the layers slice by slice."""
    from modeling_xlmr import modeling_xlmr

    stock, ours = stock_and_ours(seed=9)
    input_ids, mask = random_padded_batch([9, 4, 30, 2, 17, 11, 1, 25], 120, padding_side="left", seed=16)
    monkeypatch.setattr(modeling_xlmr, "_SLICE_TOKENS", 20)
    seen = []
    original = ours.encoder._run_layers
    monkeypatch.setattr(
        ours.encoder, "_run_layers", lambda states, *args: seen.append(len(states)) or original(states, *args)
    )
    assert_matches_stock(stock, ours, input_ids, mask)
    assert seen == [13, 30, 19, 12, 25], "whole sequences, at most 20 tokens a slice unless one is longer"
    packed = packing.PackedBatch.from_mask(mask)
    tokens = input_ids.flatten()[packed.token_indices]
    with torch.inference_mode():  # forward_packed, the inference engine's entry, slices as well
        sliced = ours.forward_packed(tokens, packed, output_hidden_states=True)
        monkeypatch.setattr(modeling_xlmr, "_SLICE_TOKENS", 10**6)
        whole = ours.forward_packed(tokens, packed, output_hidden_states=True)
    assert len(sliced.hidden_states) == len(whole.hidden_states) == 3
    for sliced_states, whole_states in zip(sliced.hidden_states, whole.hidden_states):
        torch.testing.assert_close(sliced_states, whole_states, atol=1e-5, rtol=0)
