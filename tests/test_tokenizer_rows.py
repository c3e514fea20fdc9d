"""Rows built from sentencepiece's ids equal the rows `tokenizers` builds, for every option transformers offers.

XLMRTokenizerFast answers `tokenizer(...)` from sentencepiece's ids and applies the template, truncation and
padding itself; offsets, word ids, tokens and overflowing windows come from the `tokenizers` pipeline when read.
The reference here is the same call on the `tokenizers` pipeline alone (`verify_with_sentencepiece=False`: the
`tokenizers` library truncates, pads and post-processes) on plain text, where both pipelines give the same ids,
and transformers' own XLMRobertaTokenizer for the ids.
"""

import copy
import pickle
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import XLMRobertaTokenizer

from modeling_xlmr import XLMRTokenizerFast

TEXTS = [
    "Hello world!",
    "A much longer sentence, with quite a few more words in it.",
    "x",
    "Das ist ein Test, und noch einer.",
    "这是一个测试。",
    "",
]
PAIRS = [("Hello world!", "Bonjour le monde"), ("x", "A second text that is long enough to be cut."), ("", "y")]
KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "offset_mapping", "length")

options = st.fixed_dictionaries(
    {
        "padding": st.sampled_from([False, True, "max_length"]),
        "truncation": st.sampled_from([False, True, "only_first", "only_second", "longest_first"]),
        "max_length": st.sampled_from([None, 3, 4, 9, 20]),
        "stride": st.sampled_from([0, 1, 2]),
        "pad_to_multiple_of": st.sampled_from([None, 8]),
        "padding_side": st.sampled_from(["right", "left"]),
        "add_special_tokens": st.booleans(),
        "return_overflowing_tokens": st.booleans(),
        "return_special_tokens_mask": st.booleans(),
        "return_offsets_mapping": st.booleans(),
        "return_length": st.booleans(),
        "return_token_type_ids": st.booleans(),
    }
)


@pytest.fixture(scope="module")
def pipeline_only(real_tokenizer_json, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pipeline_only")
    shutil.copy(real_tokenizer_json, directory / "tokenizer.json")
    return XLMRTokenizerFast.from_pretrained(str(directory), verify_with_sentencepiece=False)


@pytest.fixture(scope="module")
def stock(real_tokenizer_json):
    return XLMRobertaTokenizer(tokenizer_file=real_tokenizer_json, model_max_length=512)


def call(tokenizer, inputs, truncation_side, kwargs):
    tokenizer.truncation_side = truncation_side
    try:
        texts, pairs = inputs
        return tokenizer(texts, pairs, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # the same options must fail the same way (tokenizers' panics included)
        return type(error)
    finally:
        tokenizer.truncation_side = "right"


def assert_same_rows(ours, reference):
    if isinstance(reference, type):
        assert ours is reference
        return
    assert set(ours.keys()) == set(reference.keys())
    for key in ours.keys():
        assert ours[key] == reference[key], key
    assert len(ours.encodings) == len(reference.encodings)
    for row in range(len(reference.encodings)):
        assert ours.word_ids(row) == reference.word_ids(row)
        assert ours.tokens(row) == reference.tokens(row)
        assert ours.sequence_ids(row) == reference.sequence_ids(row)
    assert ours.n_sequences == reference.n_sequences


@settings(max_examples=400, deadline=None)
@given(
    kwargs=options,
    truncation_side=st.sampled_from(["right", "left"]),
    inputs=st.sampled_from([(TEXTS, None), (TEXTS[1], None), ([p[0] for p in PAIRS], [p[1] for p in PAIRS])]),
)
def test_rows_equal_the_tokenizers_pipeline(real_tokenizer, pipeline_only, stock, kwargs, truncation_side, inputs):
    ours = call(real_tokenizer, inputs, truncation_side, kwargs)
    assert_same_rows(ours, call(pipeline_only, inputs, truncation_side, kwargs))
    reference = call(stock, inputs, truncation_side, kwargs)
    if not isinstance(reference, type):
        assert ours["input_ids"] == reference["input_ids"]


def test_default_call_reads_nothing_from_tokenizers(real_tokenizer, pipeline_only):
    """The fast path: a plain call leaves every row unbuilt, and building one later gives the same row."""
    batch = real_tokenizer(TEXTS, padding=True, truncation=True, max_length=9)
    rows = batch.encodings
    assert all(row._encoding is None for row in rows)  # nothing asked of `tokenizers` yet
    reference = pipeline_only(TEXTS, padding=True, truncation=True, max_length=9)
    assert batch["input_ids"] == reference["input_ids"]
    assert [batch.word_ids(i) for i in range(len(TEXTS))] == [reference.word_ids(i) for i in range(len(TEXTS))]
    assert [row.offsets for row in rows] == [row.offsets for row in reference.encodings]


def test_encodings_read_as_a_list_of_rows(real_tokenizer, pipeline_only):
    """`encodings` makes each row object only when read, and reads like the list `tokenizers` returns: length,
    negative indices, slices, iteration, an IndexError past the end, and a deep copy."""
    batch = real_tokenizer(TEXTS, padding=True)
    reference = pipeline_only(TEXTS, padding=True).encodings
    rows = batch.encodings
    assert len(rows) == len(reference) == len(TEXTS)
    assert rows[-1].ids == reference[-1].ids and rows[-1] is rows[len(TEXTS) - 1]
    assert [row.ids for row in rows[1:3]] == [row.ids for row in reference[1:3]]
    assert [row.tokens for row in rows] == [row.tokens for row in reference]
    with pytest.raises(IndexError):
        rows[len(TEXTS)]
    copied = copy.deepcopy(batch)
    assert [copied.word_ids(row) for row in range(len(TEXTS))] == [row.word_ids for row in reference]


def test_rows_survive_pickling_and_later_settings(real_tokenizer, pipeline_only):
    batch = real_tokenizer(TEXTS[:2], padding="max_length", max_length=16, truncation=True)
    real_tokenizer(TEXTS, truncation=True, max_length=3)  # other backend settings in between
    reference = pipeline_only(TEXTS[:2], padding="max_length", max_length=16, truncation=True)
    restored = pickle.loads(pickle.dumps(batch))
    for row in range(2):
        assert restored.word_ids(row) == batch.word_ids(row) == reference.word_ids(row)
        assert restored.encodings[row].ids == batch["input_ids"][row] == reference["input_ids"][row]


def test_added_tokens_and_split_special_tokens(real_tokenizer, pipeline_only):
    texts = ["Paris is <mask>.", "a <s> b", "<mask>"]
    for split in (False, True):
        ours = real_tokenizer(texts, padding=True, return_offsets_mapping=True, split_special_tokens=split)
        reference = pipeline_only(texts, padding=True, return_offsets_mapping=True, split_special_tokens=split)
        assert_same_rows(ours, reference)


def test_a_replaced_template_is_applied_by_tokenizers(real_tokenizer_json, tmp_path):
    from tokenizers import processors

    shutil.copy(real_tokenizer_json, tmp_path / "tokenizer.json")
    tokenizer = XLMRTokenizerFast.from_pretrained(str(tmp_path))
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 2)]
    )
    assert tokenizer("Hello world!")["input_ids"] == [35378, 8999, 38, 2]
    assert tokenizer("Hello world!", add_special_tokens=False)["input_ids"] == [35378, 8999, 38]


def test_pairs_with_a_text_the_pipeline_gets_wrong(real_tokenizer, real_spm_model):
    """ｶﾞ... and long "=" runs are spelled with sentencepiece's pieces, also inside truncated pairs."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    first, second = "ｶﾞｷﾞｸﾞｹﾞｺﾞ ﾊﾟﾋﾟﾌﾟ", "=" * 47 + " and more text after it"
    first_ids, second_ids = ([i + 1 for i in processor.encode(text)] for text in (first, second))
    whole = real_tokenizer(first, second, return_offsets_mapping=True)
    assert whole["input_ids"] == [0, *first_ids, 2, 2, *second_ids, 2]
    assert whole.sequence_ids() == [None] + [0] * len(first_ids) + [None, None] + [1] * len(second_ids) + [None]
    normalizer = sentencepiece.SentencePieceNormalizer(rule_name="nmt_nfkc")
    for token, (start, end), sequence in zip(whole.tokens(), whole["offset_mapping"], whole.sequence_ids()):
        if sequence is not None and token != "\u2581":  # each piece's span holds the text the piece came from
            text = (first, second)[sequence]
            assert 0 <= start <= end <= len(text)
            assert normalizer.normalize(text[start:end]).replace("\u2581", "") == token.replace("\u2581", "")
    cut = real_tokenizer(first, second, truncation="longest_first", max_length=12, padding="max_length")
    ids = cut["input_ids"]
    assert len(ids) == 12 and ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3
    split = ids.index(2)
    assert ids[1:split] == first_ids[: split - 1] and ids[split + 2 : -1] == second_ids[: 12 - split - 3]


def test_plain_texts_and_words_take_the_plain_lane(real_tokenizer, pipeline_only, tokenizer_corpus):
    """Indented lines, runs of spaces, trailing spaces and their pre-split words, in batches of one and of many:
    every row is spanned by the plain lane (no `tokenizers` pass, no per-batch numpy layout) and equals the
    pipeline's, with padding, truncation from either side and without special tokens."""
    from modeling_xlmr.sentencepiece_plain import PlainRows

    layouts = ["    {}", "{}  ", " {} ", "{}", "{}.  {}"]
    texts = [layouts[i % 5].format(line, line) for i, line in enumerate(tokenizer_corpus[:120]) if line.isascii()]
    assert len(texts) >= 40
    calls = [
        {},
        {"padding": True, "truncation": True, "max_length": 7},
        {"padding": "max_length", "max_length": 40, "padding_side": "left", "truncation": True},
        {"add_special_tokens": False, "truncation": True, "max_length": 5},
    ]
    for batch in ([texts[0]], texts):
        for inputs, split in ((batch, False), ([text.split(" ") for text in batch], True)):
            for options in calls:
                for side in ("right", "left"):
                    kwargs = {"return_offsets_mapping": True, "return_special_tokens_mask": True, **options}
                    ours = call(real_tokenizer, (inputs, None), side, {"is_split_into_words": split, **kwargs})
                    reference = call(pipeline_only, (inputs, None), side, {"is_split_into_words": split, **kwargs})
                    assert_same_rows(ours, reference)
                    assert all(isinstance(row._native_place()[0], PlainRows) for row in ours.encodings)
