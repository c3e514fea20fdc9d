"""Property-based checks over random Unicode (hypothesis), with the real XLM-R vocabulary."""

import pytest
import sentencepiece
from hypothesis import given, settings
from hypothesis import strategies as st

# Pieces of text where converted tokenizers are known to go wrong, to be mixed at random.
TRICKY = (
    " ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "ｶ", "ﾞ", "ﾟ", "e", "\u0301", "\u0302", "ᄒ", "ᆞ", "ᆫ",
    "<mask>", "<s>", "</s>", "=", "=====", ".", "\u2581", "a", "aaaa", "👩", "\u200d", "\u200c", "\x00", "\x1b",
    "Ａ", "ー", "ｰ", "한", "ﬁ", "\ufeff", "𐌰", "ȷ", "\u0345", "ῷ",
)  # fmt: skip

unicode_text = st.text(max_size=40)
tricky_text = st.lists(st.sampled_from(TRICKY), max_size=30).map("".join)
any_text = st.one_of(unicode_text, tricky_text)


@pytest.fixture(scope="module")
def processor(real_spm_model):
    return sentencepiece.SentencePieceProcessor(model_file=real_spm_model)


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_ids_equal_sentencepiece(real_tokenizer, processor, text):
    expected = [0, *(i + 1 if i else 3 for i in processor.encode(text)), 2]
    assert real_tokenizer(text, split_special_tokens=True)["input_ids"] == expected


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_round_trip_wherever_sentencepiece_round_trips(real_tokenizer, processor, text):
    ids = real_tokenizer(text, split_special_tokens=True)["input_ids"]
    decoded = real_tokenizer.decode(ids, skip_special_tokens=True)
    if processor.decode(processor.encode(text)) == text:
        assert decoded == text


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(any_text, min_size=1, max_size=4), split=st.booleans())
def test_batches_offsets_and_padding_are_consistent(real_tokenizer, texts, split):
    batch = real_tokenizer(texts, padding=True, return_offsets_mapping=True, split_special_tokens=split)
    for text, ids, mask, offsets in zip(texts, batch["input_ids"], batch["attention_mask"], batch["offset_mapping"]):
        single = real_tokenizer(text, split_special_tokens=split)["input_ids"]
        assert ids[: len(single)] == single and set(ids[len(single) :]) <= {1}
        assert mask == [1] * len(single) + [0] * (len(ids) - len(single))
        ends = [end for start, end in offsets if end]
        assert ends == sorted(ends) and all(0 <= start <= end <= len(text) for start, end in offsets)
