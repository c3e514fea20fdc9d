"""Word -> piece label alignment on real-vocabulary text in five scripts, against an expectation written by hand.

Each expectation lists the pieces XLM-R's real vocabulary gives the pre-split words (checked against the
tokenizer too) and the label each piece must carry: the word's label on its first piece with letters, -100 on
the rest, on `<s>`/`</s>` and on a bare "▁" opening a word (the space marker sentencepiece puts before "زار",
"东京" or "."); with --label-all-pieces the rest carry the word's I- tag and the bare "▁" carries O.
"""

from __future__ import annotations

import itertools

import pytest

from modeling_xlmr.ner.alignment import IGNORED, build_windows, space_piece_id, word_pieces
from modeling_xlmr.ner.tags import inside_tag

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
_ = IGNORED

# (words, tags, [(piece, label id first-piece-only, label id with --label-all-pieces), ...] without <s>/</s>)
CASES = {
    "latin": (
        ["Angela", "Merkel", "visited", "Paris", "."],
        ["B-PER", "I-PER", "O", "B-LOC", "O"],
        [("▁Angela", 1, 1), ("▁Merkel", 2, 2), ("▁visite", 0, 0), ("d", _, 0), ("▁Paris", 5, 5), ("▁", _, 0), (".", 0, 0)],
    ),
    "cyrillic": (
        ["Владимир", "Набоков", "жил", "в", "Берлине", "."],
        ["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
        [
            ("▁Владимир", 1, 1), ("▁На", 2, 2), ("бо", _, 2), ("ков", _, 2), ("▁жил", 0, 0), ("▁в", 0, 0),
            ("▁Берлин", 5, 5), ("е", _, 6), ("▁", _, 0), (".", 0, 0),
        ],
    ),
    "cjk without spaces": (  # 东京是日本的首都, pre-split into words
        ["东京", "是", "日本", "的", "首都"],
        ["B-LOC", "O", "B-LOC", "O", "O"],
        [("▁", _, 0), ("东京", 5, 5), ("▁", _, 0), ("是", 0, 0), ("▁日本", 5, 5), ("▁", _, 0), ("的", 0, 0), ("▁", _, 0), ("首都", 0, 0)],
    ),
    "arabic": (
        ["زار", "محمد", "بن", "سلمان", "الإسكندرية"],
        ["O", "B-PER", "I-PER", "I-PER", "B-LOC"],
        [("▁", _, 0), ("زار", 0, 0), ("▁محمد", 1, 1), ("▁بن", 2, 2), ("▁سلمان", 2, 2), ("▁الإسكندرية", 5, 5)],
    ),
    "devanagari": (
        ["प्रधानमंत्री", "नरेंद्र", "मोदी", "अहमदाबाद", "गए"],
        ["O", "B-PER", "I-PER", "B-LOC", "O"],
        [("▁प्रधानमंत्री", 0, 0), ("▁नरेंद्र", 1, 1), ("▁मोदी", 2, 2), ("▁अहमद", 5, 5), ("ाबाद", _, 6), ("▁गए", 0, 0)],
    ),
}  # fmt: skip


def windows_of(tokenizer, words, tags, label_all_pieces: bool, max_length: int = 64):
    label2id = {label: index for index, label in enumerate(LABELS)}
    inside = [label2id[inside_tag(label, LABELS)] for label in LABELS] if label_all_pieces else None
    return build_windows(
        word_pieces(tokenizer, [words]),
        [[label2id[tag] for tag in tags]],
        max_length,
        4,
        (tokenizer.cls_token_id, tokenizer.sep_token_id),
        inside,
        space_piece_id(tokenizer),
        label2id["O"] if label_all_pieces else IGNORED,
    )


@pytest.mark.parametrize("script", sorted(CASES))
@pytest.mark.parametrize("label_all_pieces", [False, True])
def test_labels_sit_on_the_expected_pieces(real_tokenizer, script, label_all_pieces):
    words, tags, expected = CASES[script]
    [window] = windows_of(real_tokenizer, words, tags, label_all_pieces)
    assert real_tokenizer.convert_ids_to_tokens(window.input_ids) == [
        "<s>",
        *(piece for piece, _, _ in expected),
        "</s>",
    ]
    column = 2 if label_all_pieces else 1
    assert window.labels == [IGNORED, *(labels[column] for labels in expected), IGNORED]
    # every word is predicted from exactly the piece that carries its label in the first-piece-only column
    carriers = [position for position, labels in enumerate(expected, start=1) if labels[1] != IGNORED]
    assert window.word_positions == list(zip(carriers, range(len(words))))


def test_a_long_sentence_is_cut_into_overlapping_windows_that_cover_every_word(real_tokenizer):
    words, tags, expected = CASES["cyrillic"]
    words, tags = words * 20, tags * 20  # 120 words, 200 pieces
    windows = windows_of(real_tokenizer, words, tags, label_all_pieces=False, max_length=32)
    assert len(windows) > 6 and all(len(window.input_ids) <= 32 for window in windows)
    covered = [word for window in windows for _, word in window.word_positions]
    assert set(covered) == set(range(len(words)))  # no word dropped
    for before, after in itertools.pairwise(windows):
        assert after.first_word < before.end_word  # consecutive windows share words
    # each window repeats the hand-written labels of the words it holds
    per_word = [labels[1] for labels in expected if labels[1] != IGNORED] * 20
    for window in windows:
        assert [window.labels[position] for position, _ in window.word_positions] == [
            per_word[word] for _, word in window.word_positions
        ]
