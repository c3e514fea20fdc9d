"""Tagging files of texts with a fine-tuned NER model: one tag per word and the entities with character spans.

Inputs are `.txt` (one text per line, "\\n" only; words are the runs of non-whitespace) or `.jsonl` (a `tokens`
list of words, or a text field). Each text is tokenized as words, cut into windows of `max_length` tokens that
overlap by `stride` pieces when longer, and every word takes the label of the window where it is most central,
so every word gets exactly one tag however long the text. Entities carry their type, their text and character
offsets into the original text (for a `tokens` input: into the words joined by single spaces, given as `text`).
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.files import atomic_file
from ..configuration_xlmr import XLMRConfig
from ..hub.loading import check_model_location
from ..inference.records import RecordsError, is_valid_text, read_records, split_lines
from .alignment import build_windows, merge_predictions, space_piece_id, word_pieces
from .tags import entities_of, is_valid_tag

LONG_TEXT_POLICIES = ("chunk", "error")
_WORD = re.compile(r"\S+")


@dataclass
class NERInput:
    """A text, its words and each word's character span in it."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]

    @classmethod
    def from_text(cls, text: str) -> NERInput:
        matches = list(_WORD.finditer(text))
        return cls(text, [match.group() for match in matches], [match.span() for match in matches])

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> NERInput:
        spans, position = [], 0
        for token in tokens:
            spans.append((position, position + len(token)))
            position += len(token) + 1
        return cls(" ".join(tokens), list(tokens), spans)


@dataclass
class NERInputs:
    items: list[NERInput]
    ids: list | None = None
    id_field: str = "id"


def read_ner_inputs(path: str, fmt: str, field: str = "text", tokens_field: str = "tokens", id_field="id") -> NERInputs:
    """`.txt`: one text per line; `.jsonl`: each object's `tokens_field` list of words, else its `field` text."""
    if fmt == "txt":
        return NERInputs([NERInput.from_text(text) for text in read_records(path, "txt").texts])
    try:
        content = (sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecordsError(f"cannot read input {path}: {error}; pass a readable UTF-8 .jsonl file.") from error
    items, ids = [], []
    for number, line in enumerate(split_lines(content), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordsError(f"{path} line {number} is not JSON ({error.msg}); .jsonl needs one object per line.")
        items.append(_input_of(record, path, number, field, tokens_field))
        ids.append(record.get(id_field) if id_field else None)
    has_ids = id_field is not None and any(identifier is not None for identifier in ids)
    return NERInputs(items, ids if has_ids else None, id_field or "id")


def _input_of(record, path: str, number: int, field: str, tokens_field: str) -> NERInput:
    if isinstance(record, dict) and isinstance(record.get(tokens_field), list):
        tokens = record[tokens_field]
        if not all(isinstance(token, str) and token and not any(c.isspace() for c in token) for token in tokens):
            raise RecordsError(
                f"{path} line {number}: {tokens_field!r} must be a list of non-empty words without whitespace."
            )
        if not all(is_valid_text(token) for token in tokens):
            raise RecordsError(f"{path} line {number}: {tokens_field!r} holds a lone surrogate escape; fix it.")
        return NERInput.from_tokens(tokens)
    if isinstance(record, dict) and isinstance(record.get(field), str):
        if not is_valid_text(record[field]):
            raise RecordsError(f"{path} line {number}: field {field!r} holds a lone surrogate escape; fix it.")
        return NERInput.from_text(record[field])
    found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
    raise RecordsError(
        f"{path} line {number} has neither a {tokens_field!r} list nor a text field {field!r} (found: {found}); "
        "choose them with --tokens-field / --field."
    )


def load_ner_model(
    model: str,
    device_map=None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """The token-classification model and its tokenizer (no repo code runs unless `trust_remote_code`);
    refuses a model without NER tags as labels."""
    from ..hub.loading import load_tokenizer
    from ..modeling_xlmr import XLMRForTokenClassification

    check_model_location(model)
    config = XLMRConfig.from_pretrained(model, revision=revision)
    labels = [str(config.id2label[index]) for index in sorted(config.id2label)]
    if not all(is_valid_tag(label) for label in labels):
        raise ValueError(
            f"{model} is not a fine-tuned NER model: its labels {labels} are not O / B- / I- / E- / S- tags."
        )
    network = XLMRForTokenClassification.from_pretrained(
        model, config=config, revision=revision, device_map=device_map, dtype=dtype
    )
    tokenizer = load_tokenizer(model, revision=revision, trust_remote_code=trust_remote_code)
    return network.eval(), tokenizer


class NERPredictor:
    """Tags lists of `NERInput` with a token-classification model, window by window (see the module doc)."""

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int | None = None,
        stride: int = 128,
        max_tokens_per_batch: int = 8192,
        long_text: str = "chunk",
    ):
        limit = model.config.max_position_embeddings - (model.config.pad_token_id or 0) - 1
        self.max_length = max_length or min(limit, tokenizer.model_max_length or limit)
        if not 3 <= self.max_length <= limit:
            raise ValueError(f"--max-length must be between 3 and {limit} for this model, got {self.max_length}.")
        if not 0 <= stride < self.max_length - 2:
            raise ValueError(f"--stride must be at least 0 and below {self.max_length - 2}, got {stride}.")
        if long_text not in LONG_TEXT_POLICIES:
            raise ValueError(f"--long-text {long_text} is not for NER; use one of {', '.join(LONG_TEXT_POLICIES)}.")
        self.model, self.tokenizer, self.stride = model, tokenizer, stride
        self.max_tokens_per_batch, self.long_text = max_tokens_per_batch, long_text
        self.labels = [model.config.id2label[index] for index in range(model.config.num_labels)]

    def predict(self, inputs: Sequence[NERInput]) -> list[dict]:
        pieces = word_pieces(self.tokenizer, [item.words for item in inputs])
        special = (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id)
        windows = build_windows(
            pieces, None, self.max_length, self.stride, special, space_id=space_piece_id(self.tokenizer)
        )
        if self.long_text == "error":
            self._refuse_long(windows)
        predicted = self._label_ids([window.input_ids for window in windows])
        merged = merge_predictions(windows, predicted, [len(item.words) for item in inputs])
        return [self._row(item, [self.labels[label] for label in labels]) for item, labels in zip(inputs, merged)]

    def _refuse_long(self, windows) -> None:
        sentences = [window.sentence for window in windows]
        for previous, current in itertools.pairwise(sentences):
            if previous == current:
                raise ValueError(
                    f"text {current + 1} is longer than {self.max_length} tokens; use --long-text chunk to tag it "
                    "window by window."
                )

    @torch.inference_mode()
    def _label_ids(self, rows: list[list[int]]) -> list[list[int]]:
        """Argmax label per token of each row, in batches of similar length under the token budget."""
        order = sorted(range(len(rows)), key=lambda index: -len(rows[index]))
        results: list[list[int] | None] = [None] * len(rows)
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        start = 0
        while start < len(order):
            width = len(rows[order[start]])
            count = max(1, self.max_tokens_per_batch // width)
            batch = order[start : start + count]
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            for row, index in enumerate(batch):
                ids[row, : len(rows[index])] = torch.tensor(rows[index])
            mask = ids.ne(pad_id).long()
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), unpad_inputs=True).logits
            for row, labels in zip(batch, logits.argmax(-1).tolist()):
                results[row] = labels
            start += count
        return results

    @staticmethod
    def _row(item: NERInput, tags: list[str]) -> dict:
        entities = []
        for entity in entities_of(tags):
            begin, end = item.spans[entity.start][0], item.spans[entity.end - 1][1]
            entities.append({"type": entity.type, "text": item.text[begin:end], "start": begin, "end": end})
        return {"text": item.text, "words": item.words, "tags": tags, "entities": entities}


def write_ner_predictions(path: str, rows: list[dict], ids: list | None = None, id_field: str = "id") -> None:
    """One JSON object per input (its id first when the input had ids), written to a temporary file and renamed."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        for index, row in enumerate(rows):
            if ids is not None:
                row = {id_field: ids[index], **row}
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


__all__ = [
    "LONG_TEXT_POLICIES",
    "NERInput",
    "NERInputs",
    "NERPredictor",
    "load_ner_model",
    "read_ner_inputs",
    "write_ner_predictions",
]
