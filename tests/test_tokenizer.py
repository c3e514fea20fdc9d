"""XLMRTokenizerFast with the real XLM-R vocabulary: ids, formats, transformers features, saving, remote code."""

import copy
import multiprocessing
import os
import pickle
import shutil

import pytest
import sentencepiece
from tokenizers import Tokenizer
from transformers import AutoTokenizer, XLMRobertaTokenizer

from modeling_xlmr import XLMRTokenizerFast
from modeling_xlmr.sentencepiece_conversion import is_converted_here
from tests.support.processes import run_without_package

HELLO_IDS = [0, 35378, 8999, 38, 2]  # fairseq's xlmr.base/large encode("Hello world!")


def test_real_vocabulary_ids(real_tokenizer):
    encoded = real_tokenizer("Hello world!")
    assert encoded["input_ids"] == HELLO_IDS
    assert real_tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == "Hello world!"
    assert real_tokenizer.decode(encoded["input_ids"]) == "<s> Hello world!</s>"
    assert real_tokenizer.mask_token_id == 250001
    assert real_tokenizer.vocab_size == len(real_tokenizer) == 250002
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert real_tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 3, 250001]
    assert real_tokenizer.model_max_length == 512


def test_same_ids_as_transformers_on_plain_text(real_tokenizer, stock_tokenizer):
    stock = stock_tokenizer
    texts = ["Hello world!", "Das ist ein Test.", "这是一个测试。", "Это тест", "x"]
    assert real_tokenizer(texts)["input_ids"] == stock(texts)["input_ids"]


def test_pair_format_and_single_token_type(real_tokenizer):
    encoded = real_tokenizer("Hello world!", "Hello", return_token_type_ids=True, return_special_tokens_mask=True)
    assert encoded["input_ids"] == [0, 35378, 8999, 38, 2, 2, 35378, 2]
    assert encoded["token_type_ids"] == [0] * 8
    assert encoded["special_tokens_mask"] == [1, 0, 0, 0, 1, 1, 0, 1]


def test_literal_special_tokens(real_tokenizer, real_spm_model):
    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    # Default (transformers' convention, what fill-mask needs): "<mask>" is the mask token and eats its left space
    assert real_tokenizer("Paris is <mask>.")["input_ids"] == [
        0, *real_tokenizer("Paris is")["input_ids"][1:-1], 250001, *real_tokenizer(".")["input_ids"][1:-1], 2
    ]  # fmt: skip
    # split_special_tokens=True: plain text, exactly as sentencepiece splits it
    split = real_tokenizer("Paris is <mask>. <s>", split_special_tokens=True)["input_ids"]
    assert split == [0, *(i + 1 for i in processor.encode("Paris is <mask>. <s>")), 2]
    assert 250001 not in split and split.count(0) == 1


@pytest.fixture(scope="module")
def stock_tokenizer(real_tokenizer_json):
    return XLMRobertaTokenizer(tokenizer_file=real_tokenizer_json)


def test_padding_truncation_and_batches(real_tokenizer, stock_tokenizer):
    texts = ["Hello world!", "A much longer sentence, with quite a few more words in it."]
    batch = real_tokenizer(texts, padding=True)
    longest = max(len(ids) for ids in batch["input_ids"])
    assert all(len(ids) == longest for ids in batch["input_ids"])
    assert batch["input_ids"][0] == HELLO_IDS + [1] * (longest - 5)
    assert batch["attention_mask"][0] == [1] * 5 + [0] * (longest - 5)
    assert real_tokenizer(texts[0], padding="max_length", max_length=8)["input_ids"] == HELLO_IDS + [1, 1, 1]
    left = real_tokenizer(texts, padding=True, padding_side="left")["input_ids"][0]
    assert left == [1] * (longest - 5) + HELLO_IDS
    assert real_tokenizer(texts, padding=True, pad_to_multiple_of=8)["input_ids"][0].__len__() % 8 == 0
    # batch results equal one-by-one results
    assert real_tokenizer(texts)["input_ids"] == [real_tokenizer(text)["input_ids"] for text in texts]

    assert real_tokenizer(texts[1], truncation=True, max_length=6)["input_ids"][-1] == 2
    assert len(real_tokenizer("word " * 2000, truncation=True)["input_ids"]) == 512  # model_max_length
    # truncation strategies cut the same tokens as transformers' own XLM-R tokenizer (plain text: same ids)
    long_a, long_b = "one two three four five six seven eight", "nine ten eleven twelve"
    for strategy in ("longest_first", "only_first", "only_second"):
        ours = real_tokenizer(long_a, long_b, truncation=strategy, max_length=14)["input_ids"]
        assert ours == stock_tokenizer(long_a, long_b, truncation=strategy, max_length=14)["input_ids"]
        assert len(ours) == 14 and ours[0] == 0 and ours[-1] == 2 and ours.count(2) == 3
    overflow_kwargs = {"truncation": True, "max_length": 6, "stride": 2, "return_overflowing_tokens": True}
    overflow = real_tokenizer(texts, **overflow_kwargs)
    assert overflow["input_ids"] == stock_tokenizer(texts, **overflow_kwargs)["input_ids"]
    assert len(overflow["input_ids"]) > 2 and overflow["overflow_to_sample_mapping"][:2] == [0, 1]


def test_rechecked_texts_are_truncated_and_padded_like_the_others(real_tokenizer, real_spm_model):
    """Texts re-encoded from sentencepiece's pieces (ｶﾞ, ====) still get truncation, specials and padding."""
    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    texts = ["ｶﾞｷﾞｸﾞｹﾞｺﾞ ﾊﾟﾋﾟﾌﾟ", "=" * 47 + " and more text after it", "Hello", "plain words only here"]
    for side in ("right", "left"):
        real_tokenizer.truncation_side = side
        try:
            batch = real_tokenizer(texts, truncation=True, max_length=6, padding=True)["input_ids"]
        finally:
            real_tokenizer.truncation_side = "right"
        for text, ids in zip(texts, batch):
            pieces = [i + 1 for i in processor.encode(text)]
            kept = pieces[:4] if side == "right" else pieces[-4:]
            assert ids == [0, *kept, 2] + [1] * (4 - len(kept))


@pytest.mark.parametrize(
    "text",
    [
        "Hello world!  Again",
        "ｶﾞｷﾞ ﾊﾟ and é\u0302",  # normalized by sentencepiece's longest match: re-encoded from its pieces
        "=" * 47 + " end",  # a float32 near-tie: also re-encoded
        "x <mask> y",
    ],
)
def test_offsets_point_at_each_token_text(real_tokenizer, text):
    encoded = real_tokenizer(text, return_offsets_mapping=True)
    tokens = real_tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    normalizer = sentencepiece.SentencePieceNormalizer(rule_name="nmt_nfkc")
    assert encoded["offset_mapping"][0] == encoded["offset_mapping"][-1] == (0, 0)
    previous_end = 0
    spans = encoded["offset_mapping"][1:-1]
    for index, (token, (start, end)) in enumerate(zip(tokens[1:-1], spans)):
        if index == 0 and token == "\u2581":  # the dummy "▁" alone shares the first character's span
            assert start == spans[1][0] and start < end
            continue
        assert previous_end <= start <= end
        previous_end = end
        if token == "<mask>":
            assert text[start:end].strip() == "<mask>"
        elif token != "\u2581":
            # the span's text normalizes to the piece (minus the "▁" that stands for a space or the start)
            assert normalizer.normalize(text[start:end]).replace("\u2581", "") == token.replace("\u2581", "")


def test_special_tokens_mask_and_decode(real_tokenizer):
    encoded = real_tokenizer(["Hello world!", "Bonjour"], return_special_tokens_mask=True)
    assert encoded["special_tokens_mask"][0] == [1, 0, 0, 0, 1]
    assert real_tokenizer.batch_decode(encoded["input_ids"], skip_special_tokens=True) == ["Hello world!", "Bonjour"]
    assert real_tokenizer.convert_ids_to_tokens(HELLO_IDS) == ["<s>", "\u2581Hello", "\u2581world", "!", "</s>"]


@pytest.fixture(scope="module")
def trained_tokenizer(trained_fairseq_dir):
    """A small-vocabulary tokenizer (4000 pieces) for tests where the real vocabulary only costs time."""
    return XLMRTokenizerFast.from_pretrained(trained_fairseq_dir)


def test_pickle_and_deepcopy(trained_tokenizer):
    texts = ["Hello world!", "ｶﾞ", "=" * 40]
    for clone in (pickle.loads(pickle.dumps(trained_tokenizer)), copy.deepcopy(trained_tokenizer)):
        assert clone(texts, return_offsets_mapping=True) == trained_tokenizer(texts, return_offsets_mapping=True)


_PARENT_TOKENIZER = None  # set before forking: the children inherit it without pickling


def _encode_in_child(tokenizer, texts):
    return (tokenizer or _PARENT_TOKENIZER)(texts)["input_ids"]


def test_usable_in_forked_workers(trained_tokenizer):
    """Like `datasets.map(num_proc=...)`: the parent has used its sentencepiece helper thread before forking."""
    global _PARENT_TOKENIZER
    texts = ["Hello world!", "ｶﾞｷﾞ", "=" * 40] * 8  # enough texts for the helper thread
    expected = trained_tokenizer(texts)["input_ids"]
    _PARENT_TOKENIZER = trained_tokenizer
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            jobs = [(trained_tokenizer, texts), (None, texts)]  # pickled over / inherited through the fork
            assert pool.starmap_async(_encode_in_child, jobs).get(timeout=120) == [expected, expected]
    finally:
        _PARENT_TOKENIZER = None


def test_save_and_reload(real_tokenizer, tmp_path):
    texts = ["Hello world!", "ｶﾞｷﾞ  x", "Paris is <mask>."]
    real_tokenizer.save_pretrained(tmp_path)
    saved = set(os.listdir(tmp_path))
    assert {"tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model"} <= saved
    assert {"tokenization_xlmr.py", "sentencepiece_conversion.py"} <= saved
    reloaded = XLMRTokenizerFast.from_pretrained(tmp_path)
    assert reloaded(texts)["input_ids"] == real_tokenizer(texts)["input_ids"]
    assert reloaded.mask_token_id == 250001 and reloaded.model_max_length == 512
    # `real_tokenizer` came from a lone tokenizer.json: the sentencepiece model it saved was derived from it
    derived = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "sentencepiece.bpe.model"))
    assert [i + 1 for i in derived.encode("Hello world!")] == HELLO_IDS[1:-1]


def test_fairseq_directory_keeps_its_sentencepiece_model(trained_fairseq_dir, trained_tokenizer, tmp_path):
    tokenizer = trained_tokenizer
    tokenizer.save_pretrained(tmp_path)
    with open(os.path.join(trained_fairseq_dir, "sentencepiece.bpe.model"), "rb") as original:
        assert (tmp_path / "sentencepiece.bpe.model").read_bytes() == original.read()
    reloaded = XLMRTokenizerFast.from_pretrained(tmp_path)
    assert reloaded("Hello ｶﾞ world")["input_ids"] == tokenizer("Hello ｶﾞ world")["input_ids"]


def test_auto_tokenizer_remote_code_without_the_package(trained_tokenizer, tmp_path):
    trained_tokenizer.save_pretrained(tmp_path)
    expected = trained_tokenizer(["Hello world!", "ｶﾞｷﾞ", "a <mask>"])["input_ids"]
    result = run_without_package(
        f"""
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(tokenizer).__name__ == "XLMRTokenizerFast", type(tokenizer)
        print(tokenizer(["Hello world!", "ｶﾞｷﾞ", "a <mask>"])["input_ids"])
        """
    )
    assert result.stdout.strip().splitlines()[-1] == str(expected)


def test_auto_tokenizer_in_process(trained_tokenizer, tmp_path):
    trained_tokenizer.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    assert tokenizer("Hello <mask> world!")["input_ids"] == trained_tokenizer("Hello <mask> world!")["input_ids"]


def test_verification_can_be_switched_off(trained_fairseq_dir, trained_tokenizer, tmp_path):
    fast = XLMRTokenizerFast.from_pretrained(trained_fairseq_dir, verify_with_sentencepiece=False)
    assert fast("Hello world")["input_ids"] == trained_tokenizer("Hello world")["input_ids"]
    # half-width "ｶﾞ": `tokenizers`' per-grapheme charsmap lookup misses sentencepiece's two-character rule
    assert fast("ｶﾞ")["input_ids"] != trained_tokenizer("ｶﾞ")["input_ids"]
    fast.save_pretrained(tmp_path)
    assert XLMRTokenizerFast.from_pretrained(tmp_path).verify_with_sentencepiece is False


def test_transformers_checkpoint_layout_is_converted_again(real_tokenizer_json, real_spm_model, tmp_path):
    """Hub XLM-R checkpoints hold sentencepiece.bpe.model and transformers' tokenizer.json side by side."""
    shutil.copy(real_tokenizer_json, tmp_path / "tokenizer.json")
    shutil.copy(real_spm_model, tmp_path / "sentencepiece.bpe.model")
    tokenizer = XLMRTokenizerFast.from_pretrained(tmp_path)
    assert is_converted_here(tokenizer.backend_tokenizer._backend)
    assert not is_converted_here(Tokenizer.from_file(real_tokenizer_json))
    assert tokenizer("Paris is <mask>.")["input_ids"][-5:] == [83, 250001, 6, 5, 2]  # no "▁" left of <mask>
    assert tokenizer.added_tokens_decoder[250001].lstrip


def test_missing_files_error_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.json or a fairseq sentencepiece.bpe.model"):
        XLMRTokenizerFast.from_pretrained(tmp_path)


def test_not_a_sentencepiece_model(tmp_path):
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"")
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        XLMRTokenizerFast.from_pretrained(tmp_path)
