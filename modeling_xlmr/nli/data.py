"""Premise/hypothesis/label data for XNLI-style fine-tuning: reading, checking and tokenizing.

Every source becomes one `datasets.Dataset` with four columns, `premise`, `hypothesis`, `label`
(an int id) and `language`, so training and per-language evaluation never see file formats.
Understood out of the box (column names are looked up, so no option is needed for these):

* the Hub `xnli` schema (`premise`, `hypothesis`, `label` 0/1/2) saved as jsonl/json/csv/parquet;
* the original XNLI-1.0 `.tsv` files (`language`, `gold_label`, `sentence1`, `sentence2`, ...);
* XNLI-MT's translated training files (`premise`, `hypo`, `label` with `contradictory`);
* any csv/tsv/jsonl/parquet, with `--premise-column` etc. naming the columns.

A row's language comes from the language column if there is one, else from a `LANG=PATH` tag, else
from XNLI's file layouts (`multinli.train.fr.tsv`, the Hub dataset's `fr/` folders), else "all".

All checks (missing file, empty file, missing column, unknown or out-of-range label, missing text)
run here, before a model is loaded, and raise `NLIDataError` with one line naming the fix.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import datasets

from ..training.files import DataFile
from ..training.trainer import is_placeholder_labels

# XNLI's label ids (the Hub `xnli` dataset and the paper): 0 entailment, 1 neutral, 2 contradiction.
XNLI_LABELS = ("entailment", "neutral", "contradiction")
# XNLI-MT-1.0's translated train files spell the third label differently.
LABEL_ALIASES = {"contradictory": "contradiction"}
# The seed's table order; other languages follow alphabetically.
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
# Rows of a file with neither a language column, a `LANG=PATH` tag, nor a telling file name.
UNTAGGED_LANGUAGE = "all"
# XNLI-MT-1.0's translated files: multinli.train.fr.tsv, multinli.dev.de.tsv.
_XNLI_MT_NAME = re.compile(r"^multinli\.(train|dev)\.([a-z]{2})\.tsv$")

# Column names tried, in order, when the user names none: Hub xnli, XNLI-MT, XNLI-1.0 / MultiNLI.
DEFAULT_COLUMNS = {
    "premise": ("premise", "sentence1"),
    "hypothesis": ("hypothesis", "hypo", "sentence2"),
    "label": ("label", "gold_label"),
    "language": ("language", "lang"),
}
NLI_COLUMNS = ("premise", "hypothesis", "label", "language")
OPTION_OF_ROLE = {role: f"--{role}-column" for role in DEFAULT_COLUMNS}

BUILDER_OF_SUFFIX = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class NLIDataError(ValueError):
    """Data that fine-tuning or evaluation cannot use; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class ColumnNames:
    """Column names given by the user; `None` means "look up the usual names"."""

    premise: str | None = None
    hypothesis: str | None = None
    label: str | None = None
    language: str | None = None


def language_from_file_name(path: str) -> str | None:
    """The language XNLI's own layouts give a file by name: XNLI-MT's `multinli.train.fr.tsv`, or a
    per-language folder of the Hub dataset (`fr/test-00000-of-00001.parquet`)."""
    match = _XNLI_MT_NAME.match(os.path.basename(path))
    if match:
        return match.group(2)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return folder if folder in XNLI_LANGUAGES else None


def label_maps(names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """`id2label`/`label2id` for a model config from an ordered list of label names."""
    id2label = dict(enumerate(names))
    return id2label, {name: index for index, name in id2label.items()}


def load_nli_data(
    files: Iterable[DataFile | str],
    label2id: dict[str, int],
    columns: ColumnNames = ColumnNames(),
    languages: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Read, check and concatenate NLI files into `premise, hypothesis, label, language` rows.

    `label2id` decides which names are accepted (case-insensitive, plus XNLI-MT's `contradictory`)
    and the range of integer ids; `languages`, if given, keeps only those languages' rows.
    """
    parts = [_load_one(DataFile.parse(f) if isinstance(f, str) else f, label2id, columns) for f in files]
    if not parts:
        raise NLIDataError("No data files given.")
    data = datasets.concatenate_datasets(parts)
    if languages:
        wanted = set(languages)
        found = set(data.unique("language"))
        if not wanted & found:
            raise NLIDataError(
                f"None of the languages {sorted(wanted)} occur in the data (found {sorted(found)}); "
                "fix the language list or the language column."
            )
        data = data.filter(lambda batch: [lang in wanted for lang in batch["language"]], batched=True)
    return data


def _load_one(data_file: DataFile, label2id: dict[str, int], columns: ColumnNames) -> datasets.Dataset:
    path = data_file.path
    if not os.path.isfile(path):
        raise NLIDataError(f"Data file {path} does not exist; check the path.")
    if not _has_rows(path):
        raise NLIDataError(f"Data file {path} has no rows; give a file with premise/hypothesis/label rows.")
    raw = _read_table(path)

    names = {role: _find_column(raw.column_names, role, getattr(columns, role), path) for role in DEFAULT_COLUMNS}
    for role in ("premise", "hypothesis", "label"):
        if names[role] is None:
            raise NLIDataError(_missing_column_message(path, role, raw.column_names, getattr(columns, role)))

    convert = _RowConverter(path, names, label2id, data_file.language or language_from_file_name(path))
    converted = raw.map(convert, batched=True, with_indices=True, remove_columns=raw.column_names)
    return converted.select_columns(list(NLI_COLUMNS))


def _read_table(path: str) -> datasets.Dataset:
    suffix = os.path.splitext(path)[1].lower()
    builder = BUILDER_OF_SUFFIX.get(suffix)
    if builder is None:
        raise NLIDataError(
            f"Cannot tell the format of {path} from its extension; use one of {', '.join(sorted(BUILDER_OF_SUFFIX))}."
        )
    options = {}
    if builder == "csv":
        # Everything as text: labels may be ids or names, and "NA"/"None" are sentences, not missing values.
        delimiter = "\t" if suffix == ".tsv" else ","
        header = _csv_header(path, delimiter)
        options = dict(
            features=datasets.Features({name: datasets.Value("string") for name in header}),
            keep_default_na=False,
            sep=delimiter,
            encoding="utf-8-sig",  # some XNLI-MT files start with a byte-order mark
        )
        if suffix == ".tsv":
            options["quoting"] = csv.QUOTE_NONE  # XNLI's tsv files hold bare quotes inside sentences
    try:
        return datasets.load_dataset(builder, data_files=path, split="train", **options)
    except Exception as error:  # datasets/pyarrow/pandas raise many types for unreadable files
        raise NLIDataError(f"Could not read {path} as {builder}: {_innermost_message(error)}") from error


def _has_rows(path: str) -> bool:
    """Whether the file holds a record (beyond a csv/tsv header): `datasets` fails obscurely otherwise."""
    if path.lower().endswith(".parquet"):
        return os.path.getsize(path) > 0
    needed = 2 if BUILDER_OF_SUFFIX.get(os.path.splitext(path)[1].lower()) == "csv" else 1
    with open(path, encoding="utf-8", errors="replace") as handle:
        found = 0
        for line in handle:
            found += bool(line.strip())
            if found >= needed:
                return True
    return False


def _innermost_message(error: BaseException) -> str:
    """`datasets` wraps the parser's error ("An error occurred while generating the dataset"): dig it out."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _csv_header(path: str, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        first = handle.readline().rstrip("\r\n")
    if delimiter == "\t":
        return first.split("\t")
    return next(csv.reader([first]))


def _find_column(available: list[str], role: str, requested: str | None, path: str) -> str | None:
    if requested is not None:
        if requested not in available:
            raise NLIDataError(_missing_column_message(path, role, available, requested))
        return requested
    return next((name for name in DEFAULT_COLUMNS[role] if name in available), None)


def _missing_column_message(path: str, role: str, available: list[str], requested: str | None) -> str:
    looked_for = repr(requested) if requested else " or ".join(DEFAULT_COLUMNS[role])
    return (
        f"{path} has no {role} column (looked for {looked_for}; its columns: {', '.join(available)}); "
        f"name the right one with {OPTION_OF_ROLE[role]}."
    )


class _RowConverter:
    """Batched `map` function: original columns -> checked `premise, hypothesis, label, language`."""

    def __init__(self, path: str, names: dict[str, str | None], label2id: dict[str, int], language: str | None):
        self.path = path
        self.names = names
        self.num_labels = len(label2id)
        self.label_names = {index: name for name, index in sorted(label2id.items(), key=lambda item: item[1])}
        self.label_of_name = {name.lower(): index for name, index in label2id.items()}
        for alias, name in LABEL_ALIASES.items():
            if name in self.label_of_name:
                self.label_of_name.setdefault(alias, self.label_of_name[name])
        self.language = language

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        for role in ("premise", "hypothesis"):
            for value, index in zip(batch[self.names[role]], indices):
                if value is None:
                    raise NLIDataError(f"{self.path} row {index + 1} has no {role}; fill it in or drop the row.")
                if not isinstance(value, str):
                    raise NLIDataError(
                        f"{self.path} row {index + 1}: the {role} is a {type(value).__name__}, not text; give one "
                        "sentence per cell (for the Hub xnli dataset, use a per-language config, not all_languages)."
                    )
        labels = [self._label_id(value, index) for value, index in zip(batch[self.names["label"]], indices)]
        return {
            "premise": batch[self.names["premise"]],
            "hypothesis": batch[self.names["hypothesis"]],
            "label": labels,
            "language": self._languages(batch, indices),
        }

    def _label_id(self, value, index: int) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < self.num_labels:
                return value
            problem = f"label {value} is outside 0..{self.num_labels - 1}"
        elif isinstance(value, str) and value.strip().lower() in self.label_of_name:
            return self.label_of_name[value.strip().lower()]
        else:
            problem = f"label {value!r} is not a known label"
        names = ", ".join(f"{index}={name}" for index, name in self.label_names.items())
        raise NLIDataError(
            f"{self.path} row {index + 1}: {problem} (labels: {names}); fix the row, drop unlabeled rows, "
            "or set the label names with --labels."
        )

    def _languages(self, batch: dict[str, list], indices: list[int]) -> list[str]:
        column = self.names["language"]
        if column is None:
            return [self.language or UNTAGGED_LANGUAGE] * len(indices)
        languages = []
        for value, index in zip(batch[column], indices):
            if value is None or not str(value).strip():
                raise NLIDataError(
                    f"{self.path} row {index + 1} has no language; fill it in or tag the file LANG=PATH."
                )
            languages.append(str(value).strip())
        return languages


def ordered_languages(languages: Iterable[str]) -> list[str]:
    """XNLI's table order (en, fr, es, ...) first, then any other languages alphabetically."""
    present = set(languages)
    known = [lang for lang in XNLI_LANGUAGES if lang in present]
    return known + sorted(present - set(known))


def tokenize_pairs(data: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Encode premise/hypothesis pairs (`<s> A </s></s> B </s>`), unpadded: the collator pads per batch.

    The text columns are dropped; `label` and `language` stay (Trainer hides `language` from the model).
    XLM-R has no segment embeddings to speak of, so no token type ids are produced.
    """

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(
            batch["premise"],
            batch["hypothesis"],
            truncation=True,
            max_length=max_length,
            return_token_type_ids=False,
        )

    return data.map(encode, batched=True, remove_columns=["premise", "hypothesis"])


__all__ = [
    "XNLI_LABELS",
    "XNLI_LANGUAGES",
    "ColumnNames",
    "DataFile",
    "NLIDataError",
    "is_placeholder_labels",
    "label_maps",
    "load_nli_data",
    "ordered_languages",
    "tokenize_pairs",
]
