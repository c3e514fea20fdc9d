"""Reading texts for sharded extraction in bounded pieces: never a whole file in memory.

An input is a file, a glob, a directory (its files with a known suffix, recursively, in sorted order,
skipping names that start with "." or "_") or "-" (standard input). Formats, by suffix or `--input-format`:

* ``txt``: one text per line; lines end at "\\n" only (see `records.split_lines`);
* ``jsonl``: one object per line, the text under `field`; blank lines are skipped;
* ``csv`` / ``tsv``: a header row, then one record per row (tsv: no quoting, as XNLI's files);
* ``parquet``: a string column `field`.

Every row gets an id: the input's `id_field` when the first record has it (then every record must
have one of the same type, int or str), else its 0-based *position* over the whole input, files in
order: the line number for txt/jsonl (blank jsonl lines keep their number), the row number for
csv/tsv/parquet. A bad record is a one-line `RecordsError` naming the file and its line (1-based).

`scan` reads the input once, checking every record, counting rows and noting where every shard of
`shard_size` rows starts (a `Start`: a file, a byte offset or row, and counters), so that the
extraction can check the whole input before writing anything, skip complete shards by seeking, and
hand one shard each to parallel readers (Ray).
"""

from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .records import RecordsError, is_valid_text, jsonl_record

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
SUFFIX_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
SUFFIX_FORMATS[".parquet"] = "parquet"
STDIN = "-"
PARQUET_BATCH_ROWS = 4096


@dataclass(frozen=True)
class InputFile:
    """One file of the input (`path` "-" is standard input) and how to read it."""

    path: str
    format: str
    size: int | None  # bytes; None for standard input


@dataclass(frozen=True)
class Cursor:
    """A place in one file at a record's start: `offset` in bytes (a row for parquet), and the physical
    lines, records and id positions before it in that file."""

    offset: int = 0
    line: int = 0
    row: int = 0
    position: int = 0


@dataclass(frozen=True)
class Start:
    """Where a shard starts: file `file_index` at `cursor`; `row` counts rows over the whole input,
    `position_base` is the id position of that file's first record."""

    file_index: int
    cursor: Cursor
    row: int
    position_base: int


@dataclass(frozen=True)
class Row:
    id: int | str
    text: str
    path: str = ""  # where it came from, for error messages: file and 1-based line (parquet: row)
    line: int = 0


@dataclass
class InputPlan:
    """What `scan` found: the row count, the id type, every shard's start and each file's counts."""

    rows: int
    id_type: str  # "int" or "str"
    shard_size: int
    starts: list[Start]
    files: list[dict] = field(default_factory=list)

    def shard_rows(self, index: int) -> int:
        return max(0, min(self.shard_size, self.rows - index * self.shard_size))

    @property
    def num_shards(self) -> int:
        return len(self.starts)

    def identity(self) -> dict:
        """What a rerun must find unchanged: the files (absolute paths, sizes, row counts) and the id type."""
        files = [{**entry, "path": os.path.abspath(entry["path"])} for entry in self.files]
        return {"files": files, "rows": self.rows, "id_type": self.id_type}


def resolve_inputs(spec: str, fmt: str | None = None) -> list[InputFile]:
    """The files `spec` names, in reading order, each with its format."""
    if fmt is not None and fmt not in FORMATS:
        raise RecordsError(f"input format {fmt!r} is not supported; use one of {', '.join(FORMATS)}.")
    if spec == STDIN:
        if fmt == "parquet":
            raise RecordsError("parquet cannot be read from standard input; pass the file's path.")
        return [InputFile(STDIN, fmt or "txt", None)]
    path = Path(spec).expanduser()
    if path.is_dir():
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and _listed(p.relative_to(path), fmt)]
        if not found:
            raise RecordsError(f"input directory {spec} holds no .txt, .jsonl, .csv, .tsv or .parquet file.")
        return [_input_file(str(p), fmt) for p in found]
    if glob.has_magic(spec):
        found = [p for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True)) if os.path.isfile(p)]
        if not found:
            raise RecordsError(f"no input file matches {spec}; check the pattern (quote it so the shell keeps it).")
        return [_input_file(p, fmt) for p in found]
    if not path.is_file():
        raise RecordsError(f"cannot read input {spec}: no such file; pass a readable file, a directory, a glob or -.")
    return [_input_file(str(path), fmt)]


def _listed(relative: Path, fmt: str | None) -> bool:
    if any(part.startswith((".", "_")) for part in relative.parts):
        return False  # hidden files, temporary files, _SUCCESS markers and manifests
    return fmt is not None or relative.suffix.lower() in SUFFIX_FORMATS


def _input_file(path: str, fmt: str | None) -> InputFile:
    return InputFile(path, fmt or SUFFIX_FORMATS.get(Path(path).suffix.lower(), "txt"), os.path.getsize(path))


class TextInput:
    """The rows of an input, read lazily from any `Start` (a picklable value: Ray read tasks carry it)."""

    def __init__(self, spec: str, fmt: str | None = None, text_field: str = "text", id_field: str | None = "id"):
        self.spec = spec
        self.files = resolve_inputs(spec, fmt)
        self.text_field = text_field
        self.id_field = id_field
        self.id_type: str | None = None  # fixed by the first record (or by `scan`)

    @property
    def is_stdin(self) -> bool:
        return self.files[0].path == STDIN

    @property
    def total_bytes(self) -> int | None:
        return None if self.is_stdin else sum(file.size for file in self.files)

    def rows(self, start: Start | None = None) -> Iterator[Row]:
        """Every row from `start` (default: the beginning) to the end of the input."""
        start = start or Start(0, Cursor(), 0, 0)
        base = start.position_base
        for index in range(start.file_index, len(self.files)):
            file = self.files[index]
            end = begin = start.cursor if index == start.file_index else Cursor()
            for end, explicit_id, text in read_file(file, begin, self.text_field, self.id_field):
                if text is not None:
                    yield Row(self._id(explicit_id, base + end.position - 1, file.path, end), text, file.path, end.line)
            base += end.position  # the file's last cursor counts every position in it

    def scan(self, shard_size: int) -> InputPlan:
        """Read everything once (checking every record), noting the start of every shard."""
        if shard_size < 1:
            raise ValueError(f"shard size must be positive, got {shard_size}.")
        starts, files, rows, base = [], [], 0, 0
        for index, file in enumerate(self.files):
            cursor = previous = Cursor()
            for cursor, explicit_id, text in read_file(file, Cursor(), self.text_field, self.id_field):
                if text is None:
                    continue
                self._id(explicit_id, 0, file.path, cursor)
                if rows % shard_size == 0:
                    starts.append(Start(index, previous, rows, base))
                rows, previous = rows + 1, cursor
            files.append({"path": file.path, "format": file.format, "bytes": file.size, "rows": cursor.row})
            base += cursor.position
        return InputPlan(rows, self.id_type or "position", shard_size, starts, files)

    def _id(self, explicit, position: int, path: str, cursor: Cursor) -> int | str:
        """The row's id: its explicit id, checked against the first record's kind, or its position."""
        if explicit is not None and (isinstance(explicit, bool) or not isinstance(explicit, (int, str))):
            raise RecordsError(
                f"{path} line {cursor.line}: id field {self.id_field!r} is {explicit!r}; ids are strings or "
                "integers (or absent: then ids are line numbers); choose another with --id-field."
            )
        kind = "position" if explicit is None else "str" if isinstance(explicit, str) else "int"
        self.id_type = self.id_type or kind
        if kind != self.id_type:
            first = {"position": "has none", "int": "is an integer", "str": "is a string"}[self.id_type]
            raise RecordsError(
                f"{path} line {cursor.line}: id field {self.id_field!r} is {explicit!r} but the first record's "
                f"{first}; every record needs an id of one type (int or str), or none (then ids are line numbers)."
            )
        return position if explicit is None else explicit


def read_file(file: InputFile, start: Cursor, text_field: str, id_field: str | None):
    """(cursor after the record, explicit id or None, text) for every record of `file` from `start`; a
    blank jsonl line gives text None (no record, but it holds a position). Cursors count from the file's
    beginning; `cursor.line` is the record's last physical line (1-based)."""
    if file.format == "parquet":
        yield from _parquet_records(file.path, start, text_field, id_field)
    elif file.format in ("csv", "tsv"):
        yield from _csv_records(file, start, text_field, id_field)
    else:
        yield from _line_records(file, start, text_field, id_field)


def _lines(file: InputFile, start: Cursor) -> Iterator[tuple[Cursor, str]]:
    """(cursor after the line, the line without its "\\n" / "\\r\\n") from `start`, decoded as UTF-8 line by
    line, so a bad byte is reported with its line number."""
    stream = _stdin_bytes() if file.path == STDIN else open(file.path, "rb")  # noqa: SIM115 (closed below)
    try:
        if file.path != STDIN:
            stream.seek(start.offset)
        offset, line = start.offset, start.line
        for raw in stream:
            offset, line = offset + len(raw), line + 1
            try:
                text = raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")
            except UnicodeDecodeError as error:
                raise RecordsError(
                    f"cannot read input {file.path}: line {line} is not UTF-8 ({error.reason} at byte "
                    f"{error.start}); pass a UTF-8 file (e.g. iconv -f LATIN1 -t UTF-8)."
                ) from None
            yield Cursor(offset, line, start.row, start.position), text
    except OSError as error:
        raise RecordsError(f"cannot read input {file.path}: {error.strerror or error}.") from None
    finally:
        if file.path != STDIN:
            stream.close()


def _stdin_bytes():
    """Standard input's bytes (no newline translation), or its text re-encoded when it has no byte layer."""
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer if buffer is not None else (line.encode("utf-8") for line in sys.stdin)


def _line_records(file: InputFile, start: Cursor, text_field: str, id_field: str | None):
    row, position = start.row, start.position
    for cursor, line in _lines(file, start):
        position += 1
        if file.format == "txt":
            explicit, text = None, line
        elif not line.strip():
            yield replace(cursor, row=row, position=position), None, None  # no record; the line keeps its number
            continue
        else:
            record = jsonl_record(file.path, cursor.line, line, text_field)
            explicit, text = (record.get(id_field) if id_field else None), record[text_field]
        row += 1
        yield replace(cursor, row=row, position=position), explicit, text


def _csv_records(file: InputFile, start: Cursor, text_field: str, id_field: str | None):
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if file.format == "tsv" else (",", csv.QUOTE_MINIMAL)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long documents are texts too
    header_lines = _lines(file, Cursor())
    header_end = Cursor()
    for header_end, header_line in header_lines:
        break
    else:
        return
    header_lines.close()
    header = next(csv.reader([header_line], delimiter=delimiter, quoting=quoting), [])
    if text_field not in header:
        raise RecordsError(
            f"{file.path} has no column {text_field!r} (columns: {', '.join(header)}); choose it with --field."
        )
    text_at, id_at = header.index(text_field), (header.index(id_field) if id_field in header else None)
    begin = start if start.offset else replace(header_end, row=0, position=0)
    last = [begin]  # the cursor after the last physical line the csv reader pulled

    def lines() -> Iterator[str]:
        for cursor, line in _lines(file, begin):
            last[0] = cursor
            yield line + "\n"

    row = begin.row
    try:
        for fields in csv.reader(lines(), delimiter=delimiter, quoting=quoting, strict=True):
            if not fields:
                continue  # an empty line between records
            if len(fields) != len(header):
                raise RecordsError(
                    f"{file.path} line {last[0].line} has {len(fields)} fields, the header {len(header)}; "
                    "quote fields that hold the delimiter (tsv: no tabs inside a field)."
                )
            if not is_valid_text(fields[text_at]):
                raise RecordsError(f"{file.path} line {last[0].line}: the text is not valid UTF-8 text.")
            row += 1
            explicit = None if id_at is None else _csv_id(fields[id_at])
            yield replace(last[0], row=row, position=row), explicit, fields[text_at]
    except csv.Error as error:
        raise RecordsError(f"{file.path} line {last[0].line} is not valid {file.format} ({error}).") from None


def _csv_id(value: str) -> int | str:
    """A csv id is text; one that reads as an integer is that integer, so numeric ids stay numbers."""
    try:
        return int(value) if value.strip() == value and value else value
    except ValueError:
        return value


def _parquet_records(path: str, start: Cursor, text_field: str, id_field: str | None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise RecordsError(f"cannot read input {path}: not a parquet file ({error}).") from None
    names = handle.schema_arrow.names
    if text_field not in names:
        raise RecordsError(
            f"{path} has no column {text_field!r} (columns: {', '.join(names)}); choose it with --field."
        )
    if not pa.types.is_string(handle.schema_arrow.field(text_field).type) and not pa.types.is_large_string(
        handle.schema_arrow.field(text_field).type
    ):
        raise RecordsError(
            f"{path}: column {text_field!r} holds {handle.schema_arrow.field(text_field).type}, not text."
        )
    columns = [text_field] + ([id_field] if id_field in names and id_field != text_field else [])
    group, first = 0, 0
    while group < handle.num_row_groups and first + handle.metadata.row_group(group).num_rows <= start.offset:
        first += handle.metadata.row_group(group).num_rows
        group += 1
    row = first
    groups = list(range(group, handle.num_row_groups))
    for batch in (
        handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns) if groups else ()
    ):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for text, explicit in zip(texts, ids):
            row += 1
            if row <= start.offset:
                continue
            if text is None:
                raise RecordsError(f"{path} row {row}: column {text_field!r} is null; fill it or drop the row.")
            yield Cursor(row, row, row, row), explicit, text


__all__ = ["FORMATS", "STDIN", "Cursor", "InputFile", "InputPlan", "Row", "Start", "TextInput", "resolve_inputs"]
