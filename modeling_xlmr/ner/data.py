"""NER data: sentences of pre-split words with one tag each, read from CoNLL files or tables, and checked.

Understood formats:

* CoNLL-style text (any extension: `.conll`, `.txt`, CoNLL-2002/2003's `eng.train`, WikiANN's files): one
  token per line, its tag in the last column (columns split on spaces or tabs), a blank line between
  sentences, `-DOCSTART-` lines ignored. WikiANN's `lang:token` prefix (`en:Paris B-LOC`) is recognised when
  every token of a file has one: it is removed and gives the sentence's language.
* `.jsonl` / `.json` (a list of objects, or one object per line) / `.parquet` rows with a `tokens` list and a
  `ner_tags` list (tag names, or ids into the label names: `--labels`, the model's labels, or a parquet file's
  ClassLabel names), as the Hub's conll2003 / wikiann / xtreme datasets have them.

A sentence's language comes from a language column (`language`, `lang`, or WikiANN's per-token `langs`), else
from a `LANG=PATH` tag, else from the WikiANN prefix, else from the file name (`en.train`, `deu.testb`,
`wikiann-fr.bio`), else "all". Every problem is a `NERDataError` naming the file, the line (or record) and
the fix, raised before any model is loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..inference.records import split_lines
from ..training.files import DataFile
from .tags import is_valid_tag, ordered_labels

UNTAGGED_LANGUAGE = "all"
DOCSTART = "-DOCSTART-"
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
DEFAULT_COLUMNS = {"tokens": ("tokens", "words"), "tags": ("ner_tags", "tags", "labels"), "language": ("language", "lang", "langs")}  # fmt: skip
# CoNLL-2002/2003 name their files by three-letter language names (eng.train, ned.testa, esp.testb, deu.train).
CONLL_LANGUAGE_NAMES = {"eng": "en", "deu": "de", "ger": "de", "ned": "nl", "nld": "nl", "esp": "es", "spa": "es"}
_WIKIANN_TOKEN = re.compile(r"^([a-z]{2,3}(?:[-_][A-Za-z]{2,8})?):(.+)$", re.DOTALL)
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


class NERDataError(ValueError):
    """NER data that fine-tuning or evaluation cannot use; the message names the file, the line and the fix."""


@dataclass
class Sentence:
    """Words with one tag each (names after `resolve_tags`; ids or names as read), its language and origin."""

    words: list[str]
    tags: list
    language: str
    origin: str  # "FILE line N" / "FILE record N": where errors point


@dataclass
class NERData:
    """Sentences read from files, and the label names a parquet file declared for its tag ids (if any)."""

    sentences: list[Sentence]
    declared_labels: list[str] | None = None
    files: list[str] = field(default_factory=list)

    def languages(self) -> list[str]:
        return sorted({sentence.language for sentence in self.sentences})


@dataclass(frozen=True)
class ColumnNames:
    tokens: str | None = None
    tags: str | None = None
    language: str | None = None


def language_from_file_name(path: str, known: Iterable[str]) -> str | None:
    """A language named by one dot/dash/underscore-separated part of the file name: an ISO code among `known`
    (`train.fr.conll`, `wikiann-de.bio`) or a CoNLL-2002/2003 name (`eng.train`, `ned.testa`)."""
    known = set(known)
    for part in re.split(r"[._-]", os.path.basename(path)):
        lowered = part.lower()
        if lowered in CONLL_LANGUAGE_NAMES:
            return CONLL_LANGUAGE_NAMES[lowered]
        if lowered in known:
            return lowered
    return None


def read_ner_files(
    files: Iterable[DataFile | str],
    columns: ColumnNames = ColumnNames(),
    known_languages: Iterable[str] = (),
    languages: Sequence[str] | None = None,
) -> NERData:
    """Read and check every file (`PATH` or `LANG=PATH`); keep only `languages` if given."""
    known = tuple(known_languages)
    data = NERData(sentences=[])
    for spec in files:
        data_file = DataFile.parse(spec) if isinstance(spec, str) else spec
        sentences, declared = _read_one(data_file, columns, known)
        if declared is not None:
            if data.declared_labels is not None and data.declared_labels != declared:
                raise NERDataError(
                    f"{data_file.path} names its tag ids {declared}, another file {data.declared_labels}; "
                    "give files with the same label names, or tag names instead of ids."
                )
            data.declared_labels = declared
        data.sentences += sentences
        data.files.append(data_file.path)
    if not data.files:
        raise NERDataError("No data files given.")
    if languages:
        found = set(data.languages())
        if not set(languages) & found:
            raise NERDataError(
                f"None of the languages {sorted(languages)} occur in the data (found {sorted(found)}); "
                "fix the language list, the file names or the language column."
            )
        data.sentences = [sentence for sentence in data.sentences if sentence.language in set(languages)]
    return data


def _read_one(data_file: DataFile, columns: ColumnNames, known: tuple[str, ...]):
    path = data_file.path
    if not os.path.isfile(path):
        raise NERDataError(f"Data file {path} does not exist; check the path.")
    fallback = data_file.language or language_from_file_name(path, known)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".parquet":
        records, declared = _parquet_records(path, columns)
        sentences = _table_sentences(path, records, columns, fallback, "record")
    elif suffix in (".jsonl", ".json"):
        records, unit = _json_records(path)
        sentences, declared = _table_sentences(path, records, columns, fallback, unit), None
    else:
        sentences, declared = _conll_sentences(path, _read_text(path), data_file.language, fallback), None
    if not sentences:
        raise NERDataError(f"Data file {path} has no sentences; give tokens with tags (CoNLL lines or rows).")
    return sentences, declared


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as stream:
            return stream.read()
    except UnicodeDecodeError as error:
        raise NERDataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); re-encode it as UTF-8.")


# ---------------------------------------------------------------------------------------------------- CoNLL


def _conll_sentences(path: str, text: str, tagged: str | None, fallback: str | None) -> list[Sentence]:
    rows: list[list[tuple[int, str, str]]] = [[]]  # sentences of (line number, token, tag)
    for number, line in enumerate(split_lines(text), start=1):
        stripped = line.strip(" \t")
        if not stripped:
            rows.append([])
            continue
        parts = _COLUMN_SEPARATOR.split(stripped)
        if parts[0] == DOCSTART:
            rows.append([])
            continue
        if len(parts) < 2:
            raise NERDataError(
                f"{path} line {number}: expected a token and its tag (got {stripped[:40]!r}); CoNLL files hold "
                "'TOKEN ... TAG' per line (tag in the last column) and a blank line between sentences."
            )
        if not is_valid_tag(parts[-1]):
            raise NERDataError(
                f"{path} line {number}: tag {parts[-1]!r} is not O or B-/I-/E-/S-TYPE; fix the line "
                "(the tag is the last column)."
            )
        rows[-1].append((number, parts[0], parts[-1]))
    rows = [sentence for sentence in rows if sentence]
    wikiann = bool(rows) and all(_WIKIANN_TOKEN.match(token) for sentence in rows for _, token, _ in sentence)
    sentences = []
    for sentence in rows:
        words = [token for _, token, _ in sentence]
        language = tagged or fallback
        if wikiann:
            prefixes = [_WIKIANN_TOKEN.match(word).groups() for word in words]
            if len({prefix for prefix, _ in prefixes}) != 1:
                raise NERDataError(
                    f"{path} line {sentence[0][0]}: the sentence mixes WikiANN language prefixes "
                    f"{sorted({prefix for prefix, _ in prefixes})}; one sentence is one language."
                )
            language = tagged or prefixes[0][0]
            words = [word for _, word in prefixes]
        tags = [tag for _, _, tag in sentence]
        sentences.append(Sentence(words, tags, language or UNTAGGED_LANGUAGE, f"{path} line {sentence[0][0]}"))
    return sentences


# ---------------------------------------------------------------------------------------------------- tables


def _json_records(path: str) -> tuple[list[tuple[int, object]], str]:
    """(line or record number, parsed object) pairs: a JSON list of objects, or one object per line."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise NERDataError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}); fix the file.")
        return list(enumerate(records, start=1)), "record"
    records = []
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise NERDataError(f"{path} line {number} is not JSON ({error.msg}); .jsonl needs one object per line.")
    return records, "line"


def _parquet_records(path: str, columns: ColumnNames) -> tuple[list[tuple[int, object]], list[str] | None]:
    from datasets import Features
    from pyarrow import parquet

    try:
        table = parquet.read_table(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise NERDataError(f"Could not read {path} as parquet: {' '.join(str(error).split())}")
    declared = None
    features = Features.from_arrow_schema(table.schema)
    tags_column = _find_column(list(features), "tags", columns.tags, path)
    names = getattr(getattr(features.get(tags_column), "feature", None), "names", None)
    if names:
        declared = list(names)
    return list(enumerate(table.to_pylist(), start=1)), declared


def _find_column(available: list[str], role: str, requested: str | None, path: str) -> str | None:
    if requested is not None:
        if requested not in available:
            raise NERDataError(
                f"{path} has no column {requested!r} (its columns: {', '.join(map(str, available))}); "
                f"name the right one with --{role}-column."
            )
        return requested
    return next((name for name in DEFAULT_COLUMNS[role] if name in available), None)


def _table_sentences(path, records, columns: ColumnNames, fallback: str | None, unit: str) -> list[Sentence]:
    sentences = []
    for number, record in records:
        where = f"{path} {unit} {number}"
        if not isinstance(record, dict):
            raise NERDataError(f"{where} is a {type(record).__name__}, not an object with tokens and ner_tags.")
        names = {role: _find_column(list(record), role, getattr(columns, role), path) for role in DEFAULT_COLUMNS}
        for role in ("tokens", "tags"):
            if names[role] is None:
                looked_for = " or ".join(DEFAULT_COLUMNS[role])
                raise NERDataError(
                    f"{where} has no {role} (looked for {looked_for}; found {', '.join(map(str, record))}); "
                    f"name it with --{role}-column."
                )
        words, tags = record[names["tokens"]], record[names["tags"]]
        _check_row(where, words, tags)
        language = _row_language(where, record.get(names["language"]) if names["language"] else None)
        sentences.append(Sentence(list(words), list(tags), language or fallback or UNTAGGED_LANGUAGE, where))
    return sentences


def _check_row(where: str, words, tags) -> None:
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise NERDataError(f"{where}: tokens must be a list of strings; fix the row.")
    if not isinstance(tags, list) or not all(isinstance(tag, (str, int)) and not isinstance(tag, bool) for tag in tags):
        raise NERDataError(f"{where}: ner_tags must be a list of tag names or ids; fix the row.")
    if len(words) != len(tags):
        raise NERDataError(f"{where}: {len(words)} tokens but {len(tags)} tags; give exactly one tag per token.")
    for word in words:
        if not word or any(character.isspace() for character in word):
            raise NERDataError(f"{where}: token {word!r} is empty or holds whitespace; split it or drop it.")
    for tag in tags:
        if isinstance(tag, str) and not is_valid_tag(tag):
            raise NERDataError(f"{where}: tag {tag!r} is not O or B-/I-/E-/S-TYPE; fix the row.")


def _row_language(where: str, value) -> str | None:
    if isinstance(value, list):  # WikiANN's `langs`: one language per token
        value = value[0] if value else None
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise NERDataError(f"{where}: language {value!r} is not a language code; fix the row.")
    return value.strip()


# ---------------------------------------------------------------------------------------------------- labels


def choose_labels(data: NERData, given: Sequence[str] | None, model_labels: Sequence[str] | None) -> list[str]:
    """The label names, in id order: --labels, else the model's (when fine-tuned for NER), else a parquet
    file's ClassLabel names, else every tag name the data uses (ordered by `ordered_labels`)."""
    for labels in (given, model_labels, data.declared_labels):
        if labels:
            bad = [label for label in labels if not is_valid_tag(label)]
            if bad:
                raise NERDataError(f"label {bad[0]!r} is not O or B-/I-/E-/S-TYPE; fix --labels.")
            return list(labels)
    names = {tag for sentence in data.sentences for tag in sentence.tags if isinstance(tag, str)}
    if any(isinstance(tag, int) for sentence in data.sentences for tag in sentence.tags):
        raise NERDataError(
            "The tags are ids but no label names are known; give them in id order with --labels "
            "(e.g. O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC)."
        )
    return ordered_labels(names)


def resolve_tags(data: NERData, labels: Sequence[str]) -> None:
    """Turn every tag into its name in `labels`, checking names and id ranges (errors name the row)."""
    known = set(labels)
    for sentence in data.sentences:
        resolved = []
        for tag in sentence.tags:
            if isinstance(tag, int):
                if not 0 <= tag < len(labels):
                    raise NERDataError(
                        f"{sentence.origin}: tag id {tag} is outside 0..{len(labels) - 1} ({', '.join(labels)}); "
                        "fix the row or the label names (--labels)."
                    )
                tag = labels[tag]
            elif tag not in known:
                raise NERDataError(
                    f"{sentence.origin}: tag {tag!r} is not one of the labels ({', '.join(labels)}); "
                    "fix the row or add it to --labels."
                )
            resolved.append(tag)
        sentence.tags = resolved


__all__ = [
    "ColumnNames",
    "NERData",
    "NERDataError",
    "Sentence",
    "choose_labels",
    "language_from_file_name",
    "read_ner_files",
    "resolve_tags",
]
