"""Inputs and outputs of batch inference: text files in, arrays or JSON lines out.

Outputs are written to a temporary file beside the target and renamed at the end, so a failed or
interrupted run never leaves a partial file under the requested name.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.files import atomic_file

INPUT_FORMATS = ("txt", "jsonl")


class RecordsError(ValueError):
    """An input or output that batch inference cannot use; the message names the file and the fix."""


EMBEDDING_OUTPUTS = (".npy", ".safetensors", ".jsonl")
SAFETENSORS_KEY = "embeddings"


@dataclass
class Records:
    """The texts to process, in input order, and their ids when the input had an id field."""

    texts: list[str]
    ids: list | None = None
    id_field: str = "id"


def input_format(path: str, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    return "jsonl" if path.lower().endswith((".jsonl", ".ndjson")) else "txt"


def read_records(path: str, fmt: str, field: str = "text", id_field: str | None = "id") -> Records:
    """One text per line (`txt`; empty lines are empty texts), or one JSON object per line (`jsonl`;
    blank lines skipped). `-` reads standard input. Lines end at "\n" (or "\r\n") only."""
    try:
        content = _read_stdin() if path == "-" else Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise RecordsError(f"cannot read input {path}: {reason}; pass a readable UTF-8 .txt or .jsonl file, or -.")
    lines = split_lines(content)
    if fmt == "txt":
        return Records(texts=lines)
    return _jsonl_records(path, lines, field, id_field)


def _read_stdin() -> str:
    # The bytes, not the text layer, so that no newline translation turns a lone "\r" into a line break.
    stream = getattr(sys.stdin, "buffer", None)
    return stream.read().decode("utf-8") if stream is not None else sys.stdin.read()


def split_lines(content: str) -> list[str]:
    """'One text per line': lines end at "\n" only (a "\r" right before it is part of the break). Unlike
    `str.splitlines()`, U+2028, U+0085, form feeds and vertical tabs stay inside their text, so each input
    line is exactly one row; a final "\n" ends the last line rather than starting an empty one."""
    if not content:
        return []
    lines = content.removesuffix("\n").split("\n")
    return [line.removesuffix("\r") for line in lines]


def _jsonl_records(path: str, lines: list[str], field: str, id_field: str | None) -> Records:
    texts, ids = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = jsonl_record(path, number, line, field)
        texts.append(record[field])
        ids.append(record.get(id_field) if id_field else None)
    has_ids = id_field is not None and any(identifier is not None for identifier in ids)
    return Records(texts=texts, ids=ids if has_ids else None, id_field=id_field or "id")


def jsonl_record(path: str, number: int, line: str, field: str) -> dict:
    """Line `number` (1-based) of a .jsonl input as an object whose `field` is text, or a one-line error
    naming the file, the line and the fix (every reader of .jsonl goes through here)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise RecordsError(f"{path} line {number} is not JSON ({error.msg}); .jsonl needs one object per line.")
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise RecordsError(
            f"{path} line {number} has no text field {field!r} (found: {fields}); choose it with --field."
        )
    if not is_valid_text(record[field]):
        raise RecordsError(
            f'{path} line {number}: field {field!r} holds a lone surrogate escape (e.g. "\\ud800"), which is '
            "not text; fix that line (pair the surrogates or drop the escape)."
        )
    return record


def is_valid_text(text: str) -> bool:
    """False for a str holding lone surrogates (JSON can escape them; no UTF-8 text can hold them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_output(path: str, allowed_suffixes: Sequence[str]) -> str:
    """Validate the output path before any work: known suffix and an existing directory."""
    suffix = Path(path).suffix.lower()
    if suffix not in allowed_suffixes:
        raise RecordsError(f"output {path} must end with {' or '.join(allowed_suffixes)}.")
    directory = Path(path).parent
    if not directory.is_dir():
        raise RecordsError(f"output directory {directory} does not exist; create it first.")
    if Path(path).is_dir():
        raise RecordsError(f"output {path} is a directory; pass a file name.")
    return suffix


def write_embeddings(path: str, embeddings: np.ndarray, ids: list | None = None, id_field: str = "id") -> None:
    """(texts, hidden) float32 as .npy, .safetensors (key "embeddings") or .jsonl ({"embedding": [...]},
    with the input's id under its own field name when it had one)."""
    suffix = Path(path).suffix.lower()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    with atomic_file(path) as temporary:
        if suffix == ".npy":
            with open(temporary, "wb") as file:
                np.save(file, embeddings)
        elif suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({SAFETENSORS_KEY: embeddings}, temporary)
        else:
            rows = ({"embedding": vector} for vector in embeddings.tolist())
            _write_jsonl(temporary, _with_ids(rows, ids, id_field))


def write_classifications(path: str, records: list[dict], ids: list | None = None, id_field: str = "id") -> None:
    """One {"label", "score", "probabilities"} object per line (plus the input's id)."""
    with atomic_file(path) as temporary:
        _write_jsonl(temporary, _with_ids(records, ids, id_field))


def _with_ids(rows, ids: list | None, id_field: str):
    if ids is None:
        yield from rows
        return
    for identifier, row in zip(ids, rows, strict=True):
        yield {id_field: identifier, **row}


def _write_jsonl(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


__all__ = [
    "INPUT_FORMATS",
    "EMBEDDING_OUTPUTS",
    "SAFETENSORS_KEY",
    "Records",
    "input_format",
    "read_records",
    "check_output",
    "RecordsError",
    "write_embeddings",
    "write_classifications",
    "jsonl_record",
    "split_lines",
]
