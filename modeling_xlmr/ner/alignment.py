"""Words -> pieces -> model windows, and window predictions -> one tag per word.

Words are pre-split, so each sentence is tokenized as words (`is_split_into_words=True`, no special tokens) and
every piece knows its word. The first piece of a word carries the word's label; the other pieces carry -100
(ignored by the loss) or, with `label_all_pieces`, the I- tag of the word's entity type.

One exception: sentencepiece often spells a word as the bare space marker "▁" followed by the word's letters
("Газпром" -> "▁" "Газпром", most CJK words, "." after a space). That "▁" is the same token before every such
word and holds none of its characters, so the label goes on the first piece with letters, the one that tells
the words apart; the bare "▁" is ignored (labelled O with `label_all_pieces`, as it is never part of an entity).

A sentence longer than the model is cut into windows of whole words that overlap by about `stride` pieces.
Every word is in at least one window (a word longer than a window keeps its first pieces), so no word is ever
dropped; at prediction a word takes its label from the window where it is most central (farthest from the
window's edges, where the model sees the least context). A word that sentencepiece reduces to nothing (a lone
zero-width character) is given the `<unk>` piece, so that it still gets a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORED = -100  # the label the loss skips
SPACE_PIECE = "\u2581"  # sentencepiece's bare space marker
TOKENIZE_CHUNK = 512  # sentences per tokenizer call


@dataclass
class Window:
    """One model input: words `first_word .. end_word - 1` of sentence `sentence`, as `<s> pieces </s>`.

    `labels` has one entry per token (IGNORED where no label); `word_positions` pairs the position of each
    word's first piece with the word's index in the sentence."""

    sentence: int
    first_word: int
    end_word: int
    input_ids: list[int]
    labels: list[int]
    word_positions: list[tuple[int, int]]

    def centrality(self, position: int) -> int:
        """Pieces between `position` and the nearer edge of the window's content."""
        return min(position - 1, len(self.input_ids) - 2 - position)


def space_piece_id(tokenizer) -> int | None:
    """The id of the bare space marker "▁" (None for a vocabulary without one)."""
    piece_id = tokenizer.convert_tokens_to_ids(SPACE_PIECE)
    return None if piece_id == tokenizer.unk_token_id else piece_id


def word_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """For each sentence, the piece ids of each of its words (`<unk>` for a word with no piece)."""
    result = []
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        chunk = [list(words) for words in sentences[start : start + TOKENIZE_CHUNK]]
        batch = tokenizer(chunk, is_split_into_words=True, add_special_tokens=False, verbose=False)
        for row, words in enumerate(chunk):
            pieces: list[list[int]] = [[] for _ in words]
            for piece, word in zip(batch["input_ids"][row], batch.word_ids(row)):
                pieces[word].append(piece)
            result.append([word or [tokenizer.unk_token_id] for word in pieces])
    return result


def plan_windows(piece_counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """(first word, end word) ranges covering every word, each at most `budget` pieces (a longer word is cut
    to `budget`), consecutive ranges sharing up to `stride` pieces of whole words."""
    if budget < 1:
        raise ValueError(f"a window must hold at least one piece (got {budget}).")
    counts = [min(count, budget) for count in piece_counts]
    windows, start = [], 0
    while start < len(counts):
        end, used = start, 0
        while end < len(counts) and used + counts[end] <= budget:
            used += counts[end]
            end += 1
        end = max(end, start + 1)
        windows.append((start, end))
        if end == len(counts):
            break
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + counts[next_start - 1] <= stride:
            next_start -= 1
            overlap += counts[next_start]
        if overlap + counts[end] > budget:  # the next window must reach past this one
            next_start = end
        start = next_start
    return windows


def build_windows(
    pieces: Sequence[Sequence[Sequence[int]]],
    word_labels: Sequence[Sequence[int]] | None,
    max_length: int,
    stride: int,
    special_ids: tuple[int, int],
    inside_labels: Sequence[int] | None = None,
    space_id: int | None = None,
    space_label: int = IGNORED,
) -> list[Window]:
    """Windows of at most `max_length` tokens for every sentence; labels as the module docstring says.

    `word_labels` are label ids per word (None at prediction); `inside_labels[label]` is the label of a word's
    other pieces with --label-all-pieces (None: they are ignored); a leading bare `space_id` piece gets
    `space_label`."""
    bos, eos = special_ids
    budget = max_length - 2
    windows = []
    for sentence, words in enumerate(pieces):
        for first, end in plan_windows([len(word) for word in words], budget, stride):
            input_ids, labels, positions = [bos], [IGNORED], []
            for word in range(first, end):
                kept = list(words[word][: budget - (len(input_ids) - 1)])
                label = word_labels[sentence][word] if word_labels is not None else IGNORED
                other = inside_labels[label] if inside_labels is not None and word_labels is not None else IGNORED
                lead = int(len(kept) > 1 and kept[0] == space_id)  # a bare "▁" before the word's letters
                positions.append((len(input_ids) + lead, word))
                input_ids += kept
                labels += [space_label] * lead + [label] + [other] * (len(kept) - 1 - lead)
            windows.append(Window(sentence, first, end, [*input_ids, eos], [*labels, IGNORED], positions))
    return windows


def merge_predictions(windows: Sequence[Window], predicted: Sequence[Sequence[int]], word_counts: Sequence[int]):
    """One label id per word of each sentence, each from the window where the word is most central.

    `predicted[i]` holds a label id per token of `windows[i]` (longer rows, e.g. padded, are fine)."""
    best: list[list[tuple[int, int] | None]] = [[None] * count for count in word_counts]
    for window, labels in zip(windows, predicted, strict=True):
        for position, word in window.word_positions:
            centrality = window.centrality(position)
            current = best[window.sentence][word]
            if current is None or centrality > current[0]:
                best[window.sentence][word] = (centrality, int(labels[position]))
    missing = [(sentence, words.index(None)) for sentence, words in enumerate(best) if None in words]
    if missing:  # a bug in the window plan, never a property of the data
        raise RuntimeError(f"no window predicted word {missing[0][1]} of sentence {missing[0][0]}")
    return [[label for _, label in words] for words in best]


__all__ = [
    "IGNORED",
    "SPACE_PIECE",
    "Window",
    "build_windows",
    "merge_predictions",
    "plan_windows",
    "space_piece_id",
    "word_pieces",
]
