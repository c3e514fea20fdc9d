"""Offsets, word ids and `is_split_into_words` rows built from sentencepiece's pieces equal the `tokenizers` pipeline's.

XLMRTokenizerFast answers `return_offsets_mapping`, `word_ids()`, `tokens()` and pre-split words from
sentencepiece's own pieces wherever its normalization maps the text character for character (but for spaces
removed at either end or merged in runs), and asks the `tokenizers` pipeline only for the other texts. The
reference is the same call on the pipeline alone (`verify_with_sentencepiece=False`), on every text where the two
agree on the ids; where they disagree, each piece's span must be the smallest that holds the text the piece came
from (checked with sentencepiece's own normalizer on the model's character map).
"""

import shutil

import pytest
import sentencepiece
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_xlmr import XLMRTokenizerFast, sentencepiece_plain, sentencepiece_rows
from tests.support.corpus import ADVERSARIAL_STRINGS

ATTRIBUTES = ("input_ids", "offset_mapping", "special_tokens_mask", "attention_mask")
FEWEST_NATIVE_ROWS = sentencepiece_rows._FEWEST_NATIVE_ROWS


@pytest.fixture(autouse=True, scope="module", params=["plain", "plain text by text", "numpy"])
def every_batch_spanned_natively(request):
    """This module checks the spans made from sentencepiece's pieces, so its small batches take that path too (by
    default a batch of fewer rows asks the `tokenizers` pipeline for rows outside the plain lane, which is faster
    there). Every test runs three times: with rows of one plain text in their own lane (`sentencepiece_plain`,
    the default) spanned in numpy, the same lane spanned text by text in Python (what it does for a few texts),
    and every row in the numpy layout (`NativeRows`), so that all three are checked."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sentencepiece_rows, "_FEWEST_NATIVE_ROWS", 1)
        if request.param == "numpy":
            patch.setattr(sentencepiece_rows.LazyBatch, "_all_plains", lambda batch: (None, {}))
        else:
            patch.setattr(sentencepiece_plain, "_FEWEST_VECTORIZED_TEXTS", 1 if request.param == "plain" else 10**9)
        yield "numpy" if request.param == "numpy" else "plain"


@pytest.fixture(scope="module")
def pipeline_only(real_tokenizer_json, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pipeline_only_offsets")
    shutil.copy(real_tokenizer_json, directory / "tokenizer.json")
    return XLMRTokenizerFast.from_pretrained(str(directory), verify_with_sentencepiece=False)


def differences(ours, reference, rows: int, agreeing: list[int] | None = None) -> list[int]:
    """Rows where the ids agree (and the row is among `agreeing`, if given) but anything else a caller reads differs."""
    different = []
    for row in range(rows) if agreeing is None else agreeing:
        if ours["input_ids"][row] != reference["input_ids"][row]:
            continue
        same = all(ours[key][row] == reference[key][row] for key in ATTRIBUTES if key in reference)
        same = same and ours.word_ids(row) == reference.word_ids(row) and ours.tokens(row) == reference.tokens(row)
        same = same and ours.sequence_ids(row) == reference.sequence_ids(row)
        if not same:
            different.append(row)
    return different


def spans_tightly_cover_their_pieces(encoded, texts, normalizer, row: int) -> bool:
    """Each piece's span is the smallest run of characters whose normalization holds the piece (without "▁"): the
    spans are right for sentencepiece's pieces. Mostly the normalized span is the piece itself; a character that
    expands ("ﬁ" -> "fi") and is cut between two pieces belongs to both. A lone dummy "▁" is the exception: it
    shares the first character's span, as `tokenizers`' Prepend aligns it."""

    def spelled(start: int, end: int) -> str:
        return normalizer.normalize(source[start:end]).replace("▁", "")

    words = encoded.word_ids(row)
    for token, (start, end), word in zip(encoded.tokens(row), encoded["offset_mapping"][row], words):
        if word is None or token == "▁":
            continue
        source = texts[row][word] if isinstance(texts[row], list) else texts[row]
        piece = token.replace("▁", "").strip(" ")  # an added token's text holds the space it strips
        if piece not in spelled(start, end):
            return False
        # tight: without its first or last character (unless a space, which its "▁" stands for) it would not be
        if spelled(start, start + 1) and piece in spelled(start + 1, end):
            return False
        if spelled(end - 1, end) and piece in spelled(start, end - 1):
            return False
    return True


@pytest.mark.parametrize("split_into_words", [False, True], ids=["texts", "words"])
def test_corpus_rows_equal_the_pipeline_and_mostly_skip_it(
    real_tokenizer, pipeline_only, model_normalizer, tokenizer_corpus, split_into_words
):
    texts = tokenizer_corpus + list(ADVERSARIAL_STRINGS)
    if split_into_words:
        texts = [text.split() for text in texts]
    options = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
    if split_into_words:
        options["is_split_into_words"] = True
    native = disagreements = 0
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        ours = real_tokenizer(batch, **options)
        native += sum(row._encoding is None for row in ours.encodings)  # never asked `tokenizers`
        reference = pipeline_only(batch, **options)
        assert differences(ours, reference, len(batch)) == []
        for row in range(len(batch)):
            if ours["input_ids"][row] != reference["input_ids"][row]:
                disagreements += 1
                assert spans_tightly_cover_their_pieces(ours, batch, model_normalizer, row), batch[row]
    assert native >= 0.95 * len(texts)  # the fast path is the common one
    assert disagreements < 0.01 * len(texts)


ALPHABET = st.sampled_from(
    list("abc xyzÀé ")
    + ["  ", "\t", "\u3000", "\u200b", "\u0301", "ＡＢ", "，", "ﬁ", "ｶﾞ", "▁", "中文", "мир", "<mask>"]
    + ["\r\n", "\n", "\u00a0\u200d", " \u200c", "\ufeff"]
)
TEXTS = st.lists(ALPHABET, min_size=0, max_size=12).map("".join)
WORDS = st.lists(TEXTS.filter(lambda text: text.strip() == text and text), min_size=1, max_size=6)
OPTIONS = st.fixed_dictionaries(
    {
        "padding": st.sampled_from([False, True, "max_length"]),
        "truncation": st.sampled_from([False, True]),
        "max_length": st.sampled_from([None, 4, 9, 24]),
        "padding_side": st.sampled_from(["right", "left"]),
        "add_special_tokens": st.booleans(),
        "return_special_tokens_mask": st.just(True),
        "return_offsets_mapping": st.just(True),
    }
)


def call(tokenizer, inputs, options):
    try:
        return tokenizer(*inputs, **options)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # the same options must fail the same way
        return type(error)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.one_of(
        st.lists(TEXTS, min_size=1, max_size=4).map(lambda texts: (texts,)),
        st.lists(st.tuples(TEXTS, TEXTS), min_size=1, max_size=3).map(lambda pairs: tuple(map(list, zip(*pairs)))),
        st.lists(WORDS, min_size=1, max_size=3).map(lambda words: (words,)),
    ),
    options=OPTIONS,
)
def test_random_rows_equal_the_pipeline(real_tokenizer, pipeline_only, model_normalizer, inputs, options):
    options = dict(options)
    if isinstance(inputs[0][0], list):
        options["is_split_into_words"] = True
    ours, reference = call(real_tokenizer, inputs, options), call(pipeline_only, inputs, options)
    if isinstance(reference, type):
        assert ours is reference
        return
    # Agreement is judged on whole texts: a row rebuilt from sentencepiece's pieces (the pipeline disagrees with
    # it somewhere in the text) keeps sentencepiece's spans even where truncation cut the disagreement away.
    whole = {**options, "truncation": False, "padding": False, "max_length": None}
    whole_ours, whole_reference = real_tokenizer(*inputs, **whole), pipeline_only(*inputs, **whole)
    rows = len(reference["input_ids"])
    agreeing = [row for row in range(rows) if whole_ours["input_ids"][row] == whole_reference["input_ids"][row]]
    assert differences(ours, reference, rows, agreeing) == []
    if len(inputs) == 1 and not options["truncation"] and options["add_special_tokens"]:
        for row in set(range(rows)) - set(agreeing):
            assert spans_tightly_cover_their_pieces(ours, inputs[0], model_normalizer, row)


def test_extra_whitespace_is_spanned_without_the_pipeline(real_tokenizer, pipeline_only, tokenizer_corpus):
    # Indented lines, runs of spaces, tabs, CRLFs and other spaces the normalizer removes or merges: the spans come
    # from sentencepiece's pieces (no row asks `tokenizers`) and equal the pipeline's.
    layouts = ["  {}", "\t{} ", "{}\r\n", "{}   \t", "\u3000 {}\n\n", "\r\n\r\n  {}", " {}\u00a0\u2009"]
    texts = []
    for index, line in enumerate(tokenizer_corpus[:140]):
        words = line.split(" ")
        middle = len(words) // 2
        spread = (
            " ".join(words[:middle])
            + ["  ", "\t ", "\r\n", " \u3000\u00a0", "\n"][index % 5]
            + " ".join(words[middle:])
        )
        texts.append(layouts[index % len(layouts)].format(spread))
    options = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
    ours, reference = real_tokenizer(texts, **options), pipeline_only(texts, **options)
    agreeing = [row for row in range(len(texts)) if ours["input_ids"][row] == reference["input_ids"][row]]
    assert len(agreeing) >= len(texts) - 3
    assert differences(ours, reference, len(texts)) == []
    native = [row for row in agreeing if ours.encodings[row]._encoding is None]
    assert len(native) >= 0.95 * len(agreeing)


def test_indented_text_is_spanned_as_transformers_spans_it(real_tokenizer, real_tokenizer_json, tokenizer_corpus):
    # The reference is transformers' own XLM-R tokenizer on the same tokenizer.json, an independent pipeline. Before
    # the first word sentencepiece drops the spaces (and what its map makes spaces: tabs, U+3000, a BOM, a zero
    # width space) and prepends its "▁"; transformers aligns that "▁" with the last of them, and so must we.
    from transformers import XLMRobertaTokenizer

    stock = XLMRobertaTokenizer(tokenizer_file=real_tokenizer_json)
    leads = [" ", "    ", "\t", "\t\t ", "\u3000", " \u00a0", "\ufeff", "\u200b", "\r\n  ", "  \n"]
    texts = [leads[index % len(leads)] + line for index, line in enumerate(tokenizer_corpus[:200])]
    # lone "▁" pieces, expanded characters
    texts += [f"{lead}{word} x" for lead in leads for word in ("「引用」", "-", "ｶﾞ", "Ⅻ")]
    words = [[word for word in text.split(" ") if word.strip()] for text in texts]  # "\tword" keeps its own
    for inputs, split in ((texts, False), (words, True)):
        options = {"return_offsets_mapping": True, "is_split_into_words": split}
        ours, reference = real_tokenizer(inputs, **options), stock(inputs, **options)
        agreeing = [row for row in range(len(inputs)) if ours["input_ids"][row] == reference["input_ids"][row]]
        assert len(agreeing) >= 0.9 * len(inputs)
        assert differences(ours, reference, len(inputs)) == []
        if not split:  # the first piece starts at the last leading space, not at the word
            indented = [row for row in agreeing if texts[row][:1] in (" ", "\t")]
            assert len(indented) > 50
            for row in indented:
                assert ours["offset_mapping"][row][1][0] == len(texts[row]) - len(texts[row].lstrip()) - 1


def test_a_tokenizer_saved_before_the_leading_space_rule_is_converted_again(real_tokenizer, tmp_path):
    # An earlier version dropped the leading spaces in its pipeline (same ids, spans starting at the first word);
    # its saved tokenizer.json is rebuilt from the sentencepiece model beside it, so both paths span alike.
    import json

    real_tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    steps = saved["normalizer"]["normalizers"]
    assert steps[-1]["type"] == "Replace" and steps[-2]["type"] == "Prepend"
    steps.pop()  # back to the earlier pipeline: leading spaces removed, then the dummy prefix
    steps[1]["pattern"]["Regex"] = "\\A +|" + steps[1]["pattern"]["Regex"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    texts = ["   indented line", "\tTab", "plain text"] * 20
    reloaded = XLMRTokenizerFast.from_pretrained(str(tmp_path), verify_with_sentencepiece=False)
    expected = real_tokenizer(texts, return_offsets_mapping=True)
    assert reloaded(texts, return_offsets_mapping=True)["offset_mapping"] == expected["offset_mapping"]
    assert [expected["offset_mapping"][row][1][0] for row in range(3)] == [2, 0, 0]  # the last leading space


def test_small_batches_ask_the_pipeline_and_rows_stay_the_same(
    real_tokenizer, pipeline_only, tokenizer_corpus, every_batch_spanned_natively
):
    # The default policy: a plain text (or a row of pre-split plain words) is spanned from sentencepiece's pieces
    # in a batch of any size (the plain lane's few array operations cost less than the pipeline even for one
    # text); other rows (here: all, with the plain lane off) are built by the `tokenizers` pipeline (checked
    # against sentencepiece's ids) when there are fewer than FEWEST_NATIVE_ROWS of them, from there on spanned
    # from sentencepiece's pieces. The rows are the same either way.
    plain_lane = every_batch_spanned_natively == "plain"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sentencepiece_rows, "_FEWEST_NATIVE_ROWS", FEWEST_NATIVE_ROWS)
        for size in (1, FEWEST_NATIVE_ROWS - 1, FEWEST_NATIVE_ROWS):
            texts = tokenizer_corpus[:size]
            for inputs, split in ((texts, False), ([text.split(" ") for text in texts], True)):
                options = {"return_offsets_mapping": True, "is_split_into_words": split}
                ours, reference = real_tokenizer(inputs, **options), pipeline_only(inputs, **options)
                assert differences(ours, reference, size) == []
                native = [row for row in range(size) if ours.encodings[row]._encoding is None]
                assert len(native) == (size if size >= FEWEST_NATIVE_ROWS or plain_lane else 0)


def test_texts_that_only_lose_spaces_equal_the_pipeline(real_tokenizer, pipeline_only, tokenizer_corpus):
    # Indented lines, trailing spaces and runs between words (the commonest extra whitespace in real text), as
    # texts and as words split on " " (so words with spaces at either end, and empty words).
    layouts = ["    {}", "{}  ", " {} ", "{}", "        {}   "]
    texts = []
    for index, line in enumerate(tokenizer_corpus[:150]):
        words = line.split(" ")
        gap = " " * (1 + index % 4)  # one space (kept) to four (a run)
        texts.append(layouts[index % len(layouts)].format(gap.join(words)))
    options = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
    for inputs, split in ((texts, False), ([text.split(" ") for text in texts], True)):
        ours = real_tokenizer(inputs, is_split_into_words=split, **options)
        reference = pipeline_only(inputs, is_split_into_words=split, **options)
        agreeing = [row for row in range(len(texts)) if ours["input_ids"][row] == reference["input_ids"][row]]
        assert len(agreeing) >= len(texts) - 3
        assert differences(ours, reference, len(texts)) == []
        native = [row for row in agreeing if ours.encodings[row]._encoding is None]
        assert len(native) >= 0.95 * len(agreeing)


def test_long_texts_and_words_equal_the_pipeline(real_tokenizer, pipeline_only, tokenizer_corpus):
    # Spans that start past a text's 512th character are made one by one (the others are shared tuples): in
    # texts, in pre-split words, padded on either side and cut.
    long_texts = [" ".join(tokenizer_corpus[start : start + 40]) for start in range(0, 400, 40)]
    long_texts += ["x" + "a" * 600 + " " + "б" * 70, "0123456789" * 80 + " end"]
    assert max(map(len, long_texts)) > 2000
    for inputs, options in (
        (long_texts, {}),
        (long_texts, {"padding": True, "padding_side": "left"}),
        (long_texts, {"truncation": True, "max_length": 300, "padding": "max_length"}),
        ([text.split() for text in long_texts], {"is_split_into_words": True, "padding": True}),
    ):
        options = {"return_offsets_mapping": True, "return_special_tokens_mask": True, **options}
        ours, reference = real_tokenizer(inputs, **options), pipeline_only(inputs, **options)
        agreeing = [row for row in range(len(inputs)) if ours["input_ids"][row] == reference["input_ids"][row]]
        assert len(agreeing) >= len(inputs) - 2  # the pipeline's rare disagreements with sentencepiece aside
        assert differences(ours, reference, len(inputs)) == []
        assert any(start >= 512 for row in ours["offset_mapping"] for start, _ in row)


def test_repeated_words_are_each_their_own(real_tokenizer, pipeline_only, real_spm_model):
    # Each distinct word of a batch is encoded once: words repeated within a row, across rows, beside added tokens
    # and in both texts of a pair still get their own ids (sentencepiece's, word by word), spans and word ids.
    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    words = [
        ["the", "cat", "the", "cat", "sat"],
        ["the", "<mask>", "the", "x<mask>y", "<mask>"],
        ["Straße", "", "Straße", "東京", "東京"],
        ["cat", "the", "the"],
    ]
    options = {"is_split_into_words": True, "return_offsets_mapping": True, "padding": True}
    for inputs in (words, list(zip(words, reversed(words)))):
        ours, reference = real_tokenizer(inputs, **options), pipeline_only(inputs, **options)
        assert differences(ours, reference, len(inputs)) == []
        assert ours["input_ids"] == reference["input_ids"]
    plain = real_tokenizer(words[:1] + words[3:], is_split_into_words=True, add_special_tokens=False)
    for row, row_words in zip(plain["input_ids"], words[:1] + words[3:]):
        expected = [piece for word in row_words for piece in processor.encode(word, out_type=str)]
        assert real_tokenizer.convert_ids_to_tokens(row) == expected
    plain["input_ids"][0].append(-1)  # rows share no list: changing one changes no other
    assert -1 not in plain["input_ids"][1]


def test_words_remembered_across_calls_stay_their_own(real_tokenizer, real_spm_model, monkeypatch):
    # Pre-split words are remembered across calls, up to a fixed number (then only looked up, as `tokenizers`' own
    # Unigram cache does): later calls, calls past that number and a pickled copy still give each word
    # sentencepiece's own pieces, and a caller changing a returned row changes no later row.
    import pickle

    from modeling_xlmr import sentencepiece_backend

    reference = real_tokenizer._tokenizer._reference
    monkeypatch.setattr(reference, "_word_cache", {})
    monkeypatch.setattr(sentencepiece_backend, "_WORD_CACHE_SIZE", 4)
    processor = sentencepiece.SentencePieceProcessor(model_file=real_spm_model)
    calls = [
        [["the", "cat", "sat"], ["Straße", "the"]],
        [["the", "dog", "sat", "東京"], ["cat", "Kyiv", "Київ", "the"]],  # past the 4 remembered words
        [["Київ", "dog", "the", "東京"], ["نحن", "cat"]],
    ]
    for words in calls:
        encoded = real_tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        for row, row_words in zip(encoded["input_ids"], words):
            expected = [piece for word in row_words for piece in processor.encode(word, out_type=str)]
            assert real_tokenizer.convert_ids_to_tokens(row) == expected
            row.append(-1)  # must not reach the remembered words
        assert len(reference._word_cache) <= 4
    assert set(reference._word_cache) == {"the", "cat", "sat", "Straße"}  # the first ones, then no more
    copy = pickle.loads(pickle.dumps(real_tokenizer))
    assert copy._tokenizer._reference._word_cache == {}
    again = copy(calls[1], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert again == real_tokenizer(calls[1], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert -1 not in again[0] + again[1]


# Texts that the normalization rule judges: the characters its map treats specially (combining marks, Bengali
# vowel signs that merge with the sign before them, halfwidth voiced marks, fullwidth forms, joiners, controls,
# enclosed letters from the astral planes) among ordinary ones and spaces.
RULE_ALPHABET = st.one_of(
    st.sampled_from(list("ab e\u09c7\u09be\u0301\u0308\u3099\uff76\uff9e\u200c\u200d\t\u00a0\u2581ｶ中\U0001f149")),
    st.characters(min_codepoint=0x20, max_codepoint=0x2FFF),
    st.characters(min_codepoint=0xF900, max_codepoint=0x1F2FF),
)


@pytest.fixture(scope="module")
def model_proto(real_tokenizer_json):
    from modeling_xlmr.sentencepiece_conversion import model_proto_from_tokenizer_json

    return model_proto_from_tokenizer_json(real_tokenizer_json)


@pytest.fixture(scope="module")
def rule(model_proto):
    from modeling_xlmr.sentencepiece_spans import NormalizationRule

    return NormalizationRule.of(model_proto.normalizer_spec)


@pytest.fixture(scope="module")
def model_normalizer(model_proto):
    """sentencepiece's own normalizer on this model's character map (its built-in nmt_nfkc is a newer Unicode's)."""
    return sentencepiece.SentencePieceNormalizer(model_proto=model_proto.SerializeToString())


def kept_by_sentencepiece(normalizer, text: str) -> bool:
    return normalizer.normalize(text) == "▁" + text.replace(" ", "▁")


def test_normalization_rule_keeps_only_what_sentencepiece_keeps_character_by_character(rule, model_normalizer):
    # Every basic-plane character and every astral one up to U+2FFFF, alone between letters: where the rule says
    # sentencepiece keeps the text, sentencepiece's own normalizer (on this model's map) must keep it.
    texts = [f"a{chr(code)}a" for code in range(0x20, 0x30000) if not 0xD800 <= code < 0xE000]
    changed = rule.changed(texts)
    kept = [text for index, text in enumerate(texts) if index not in changed]
    assert [text for text in kept if not kept_by_sentencepiece(model_normalizer, text)] == []
    # ... and it is not a rule that refuses everything: most characters are kept
    assert len(kept) > 0.9 * len(texts)


@settings(max_examples=400, deadline=None)
@given(units=st.lists(st.lists(RULE_ALPHABET, max_size=8).map("".join), min_size=1, max_size=6))
def test_normalization_rule_is_exact_on_random_texts(rule, model_normalizer, units):
    changed = rule.changed(units)
    for index, unit in enumerate(units):
        if index not in changed:
            assert kept_by_sentencepiece(model_normalizer, unit), unit
