"""`XLMRHubInterface.embed` / `classify` and the batching they use.

The reference for every batched result is the fairseq-style `extract_features` run on one text at
a time and pooled by hand; long-text windows are recomputed here with their own (independent) loop.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_xlmr import XLMRForSequenceClassification, XLMRHubInterface
from modeling_xlmr.inference import batching
from tests.support.models import TEXTS, build_tiny_repo, cosine, fast_stock_tokenizer

LONG = " ".join(["Der alte Mann geht jeden Morgen mit seinem Hund durch den grünen Wald zur Arbeit."] * 80)


@pytest.fixture(scope="module")
def xlmr(real_tokenizer_json, tmp_path_factory) -> XLMRHubInterface:
    repo = build_tiny_repo(tmp_path_factory.mktemp("embed_repo"), fast_stock_tokenizer(real_tokenizer_json))
    return XLMRHubInterface.from_pretrained(str(repo)).eval()


def content_ids(xlmr, text: str) -> list[int]:
    return xlmr.encode(text).tolist()[1:-1]


def reference_vector(xlmr, token_ids: list[int], pooling: str) -> torch.Tensor:
    """One sequence through extract_features alone, pooled by hand."""
    with torch.no_grad():
        features = xlmr.extract_features(torch.tensor(token_ids))[0]
    return features[0] if pooling == "cls" else features.mean(dim=0)


def reference_chunked(xlmr, text: str, pooling: str, size: int = 510, overlap: int = 128) -> torch.Tensor:
    """Windows of `size` content ids advancing by size - overlap, the last one ending at the text's end;
    window vectors averaged with weights = window token count (with <s>, </s>)."""
    ids = content_ids(xlmr, text)
    starts = [0]
    while starts[-1] + size < len(ids):
        starts.append(min(starts[-1] + size - overlap, len(ids) - size))
    windows = [[0, *ids[start : start + size], 2] for start in starts]
    vectors = torch.stack([reference_vector(xlmr, window, pooling) for window in windows])
    weights = torch.tensor([float(len(window)) for window in windows])
    return (vectors * weights[:, None]).sum(0) / weights.sum(), windows


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embed_equals_per_sentence_features_whatever_the_batches_and_order(xlmr, pooling):
    expected = torch.stack([reference_vector(xlmr, xlmr.encode(text).tolist(), pooling) for text in TEXTS])
    generator = random.Random(0)
    for budget in (1, 37, 120, 100_000):
        order = list(range(len(TEXTS)))
        generator.shuffle(order)
        embedded = xlmr.embed([TEXTS[i] for i in order], pooling=pooling, max_tokens_per_batch=budget)
        assert embedded.dtype == torch.float32 and embedded.shape == (len(TEXTS), 32)
        torch.testing.assert_close(embedded, expected[order], atol=1e-5, rtol=1e-5)


def test_normalize_gives_unit_vectors_in_the_same_direction(xlmr):
    raw = xlmr.embed(TEXTS, pooling="mean")
    normalized = xlmr.embed(TEXTS, pooling="mean", normalize=True)
    torch.testing.assert_close(normalized.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(normalized, raw / raw.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_chunk_pools_overlapping_windows_over_the_whole_text(xlmr, pooling):
    expected, windows = reference_chunked(xlmr, LONG, pooling)
    assert len(content_ids(xlmr, LONG)) > 1000 and len(windows) >= 3  # really long
    texts = [TEXTS[1], LONG, TEXTS[3], LONG[: len(LONG) // 2]]
    embedded = xlmr.embed(texts, pooling=pooling, long_text="chunk", max_tokens_per_batch=1024)
    torch.testing.assert_close(embedded[1], expected, atol=1e-5, rtol=1e-5)
    half, _ = reference_chunked(xlmr, texts[3], pooling)
    torch.testing.assert_close(embedded[3], half, atol=1e-5, rtol=1e-5)
    # short texts are untouched by the long ones around them
    torch.testing.assert_close(
        embedded[0], reference_vector(xlmr, xlmr.encode(TEXTS[1]).tolist(), pooling), atol=1e-5, rtol=1e-5
    )
    if pooling == "mean":  # token-count weights make it the mean over every window's tokens
        with torch.no_grad():
            all_tokens = torch.cat([xlmr.extract_features(torch.tensor(w))[0] for w in windows])
        torch.testing.assert_close(embedded[1], all_tokens.mean(0), atol=1e-5, rtol=1e-5)


def test_truncate_keeps_the_first_510_tokens_and_error_names_the_text(xlmr):
    ids = content_ids(xlmr, LONG)
    truncated = xlmr.embed(["short", LONG], long_text="truncate")
    torch.testing.assert_close(truncated[1], reference_vector(xlmr, [0, *ids[:510], 2], "cls"), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=rf"text 1 has {len(ids) + 2} tokens.*512.*long_text='truncate'.*'chunk'"):
        xlmr.embed(["short", LONG])
    limit = " ".join(["a"] * 510)  # 510 content tokens + <s></s> = 512: fits
    assert len(content_ids(xlmr, limit)) == 510
    assert xlmr.embed([limit]).shape == (1, 32)


def test_embed_rejects_bad_options_and_handles_no_texts(xlmr):
    assert xlmr.embed([]).shape == (0, 32)
    with pytest.raises(ValueError, match="pooling='max'.*'cls', 'mean'"):
        xlmr.embed(TEXTS, pooling="max")
    with pytest.raises(ValueError, match="long_text='drop'"):
        xlmr.embed(TEXTS, long_text="drop")
    with pytest.raises(TypeError, match="list of texts"):
        xlmr.embed("one text")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_embeddings_are_finite_and_close_to_fp32(xlmr, dtype):
    reference = xlmr.embed(TEXTS + [LONG], pooling="mean", long_text="chunk")
    half = XLMRHubInterface(xlmr.model, xlmr.tokenizer)
    half.model = type(xlmr.model).from_pretrained(xlmr.model.name_or_path, dtype=dtype).eval()
    embedded = half.embed(TEXTS + [LONG], pooling="mean", long_text="chunk")
    assert embedded.dtype == torch.float32 and torch.isfinite(embedded).all()
    for ours, theirs in zip(embedded, reference):
        assert cosine(ours, theirs) >= 0.999


def test_classify_uses_id2label_and_matches_the_model_alone(real_tokenizer_json, tmp_path):
    labels = {0: "sports", 1: "politics", 2: "science"}
    repo = build_tiny_repo(
        tmp_path,
        fast_stock_tokenizer(real_tokenizer_json),
        XLMRForSequenceClassification,
        seed=3,
        num_labels=3,
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
    )
    xlmr = XLMRHubInterface.from_pretrained(str(repo))
    results = xlmr.classify(TEXTS + [LONG], long_text="truncate", max_tokens_per_batch=64)
    model = xlmr.model.eval()
    for text, result in zip(TEXTS + [LONG], results, strict=True):
        inputs = xlmr.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            expected = F.softmax(model(**inputs).logits[0], dim=-1)
        assert list(result["probabilities"]) == ["sports", "politics", "science"]
        assert list(result["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)
        assert result["label"] == labels[int(expected.argmax())]
        assert result["score"] == pytest.approx(float(expected.max()), abs=1e-5)
    with pytest.raises(ValueError, match="long_text='chunk'"):
        xlmr.classify(TEXTS, long_text="chunk")


# ---------------------------------------------------------------------------------------- batching


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 512), max_size=40), budget=st.integers(1, 4096))
def test_token_budget_batches_cover_everything_once_within_budget(lengths, budget):
    batches = batching.token_budget_batches(lengths, budget)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 5000), size=st.integers(2, 510), data=st.data())
def test_window_starts_cover_every_id_with_the_requested_overlap(length, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    starts = batching.window_starts(length, size, overlap)
    covered = set()
    for start in starts:
        covered.update(range(start, min(start + size, length)))
    assert covered == set(range(length))
    assert starts[0] == 0 and (length <= size or starts[-1] + size == length)
    for previous, current in zip(starts, starts[1:]):
        assert previous + size - current >= overlap  # neighbours share at least `overlap` ids
