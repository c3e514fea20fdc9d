"""A directory of parquet shards that a crash never corrupts and a rerun completes.

    OUT/part-000000.parquet ...     rows [k * shard_size, (k + 1) * shard_size) of the input, in input order
    OUT/_manifest.json              settings (model, revision, dtype, pooling, ...), input, count, per-shard sha256
    OUT/_shards/part-000000.json    one entry per complete shard (the journal parallel writers append to)

`pyarrow.dataset.dataset(OUT, format="parquet")` reads the shards as one table and skips the names
starting with "_" (and the ".part-*.tmp" files of a run in progress). A shard is written to a temporary
name, flushed, hashed and renamed; only then is its journal entry written, so a shard counts as
complete only if its file is whole and its sha256 matches. A rerun with the same settings and input
verifies those and redoes the rest; different settings are refused unless told to start over, which
removes only what this format wrote (shards, journal entries, temporary files, the manifest).

Columns: `id` (int64 or string), then `embedding` (fixed-size list of float32 or float16) or `label`
(string), `score` (float32), `probabilities` (fixed-size list of float32, in the manifest's label order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..common.files import current_umask, write_text_atomically
from .records import RecordsError

MANIFEST = "_manifest.json"
JOURNAL = "_shards"
FORMAT_NAME = "xlmr-shards/1"
SHARD_PATTERN = re.compile(r"^part-(\d{6,})\.parquet$")
TEMPORARY_PATTERN = re.compile(r"^\.part-\d{6,}\.parquet\.[^/]*\.tmp$")
VECTOR_DTYPES = ("float32", "float16")
ROW_COLUMN = "__row"  # the input row number a parallel pipeline carries to the shard writer (never written)


class OutputMismatchError(RecordsError):
    """An existing output was written with other settings or from another input."""


def shard_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def is_directory_output(path: str) -> bool:
    """`--output` names a directory: an existing one, or a path ending in "/"."""
    return path.endswith(("/", os.sep)) or Path(path).is_dir()


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ tables


def id_arrow_type(id_type: str):
    import pyarrow as pa

    return pa.string() if id_type == "str" else pa.int64()


def id_column(ids: Sequence, id_type: str):
    import pyarrow as pa

    return pa.array(list(ids), type=id_arrow_type(id_type))


def embedding_columns(vectors: np.ndarray, vector_dtype: str = "float32") -> dict:
    """{"embedding": the vectors as a fixed-size list} (a plain Arrow list, not Ray's tensor type)."""
    import pyarrow as pa

    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector dtype {vector_dtype!r} is not supported; use float32 or float16.")
    values = np.ascontiguousarray(vectors, dtype=vector_dtype)
    check_finite(values)
    flat = pa.array(values.reshape(-1), type=pa.float16() if vector_dtype == "float16" else pa.float32())
    return {"embedding": pa.FixedSizeListArray.from_arrays(flat, values.shape[1])}


def classification_columns(probabilities: np.ndarray, labels: Sequence[str]) -> dict:
    """{"label", "score", "probabilities"}: the most probable label, its probability, all of them (in
    `labels` order, a fixed-size list of float32)."""
    import pyarrow as pa

    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32).reshape(-1, len(labels))
    check_finite(probabilities)
    best = probabilities.argmax(axis=1)
    flat = pa.array(probabilities.reshape(-1), type=pa.float32())
    return {
        "label": pa.array([labels[index] for index in best], type=pa.string()),
        "score": pa.array(probabilities[np.arange(len(best)), best], type=pa.float32()),
        "probabilities": pa.FixedSizeListArray.from_arrays(flat, len(labels)),
    }


def check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError("the model produced NaN or infinite values; check the model's weights and --dtype.")


# ------------------------------------------------------------------------------------------------ the directory


class ShardedOutput:
    """The output directory of one run: what is complete already, and the writer of the rest.

    `settings` are what must not change between a run and its rerun (model, revision, dtype, pooling,
    ...); `source` identifies the input (files, sizes, rows), `None` when it cannot be checked (stdin).
    """

    def __init__(self, directory: str | os.PathLike, settings: dict, source: dict | None, shard_size: int):
        self.directory = Path(directory)
        self.settings = settings
        self.source = source
        self.shard_size = shard_size
        self.complete: dict[int, dict] = {}
        self.pending: list[tuple[str, dict]] = []
        self.created = False  # whether `open` made the directory

    # --------------------------------------------------------------------------------- opening

    def open(self, overwrite: bool = False, announce: bool = True) -> dict[int, dict]:
        """Create or reopen the directory; returns {shard index: entry} of the verified complete shards.
        `announce`: write the manifest now (not for a stream whose input may still prove bad: it names
        nothing before it has ended well)."""
        if not self.directory.exists():
            if not self.directory.parent.is_dir():
                raise RecordsError(f"output directory {self.directory.parent} does not exist; create it first.")
            self.directory.mkdir()
            self.created = True
        elif not self.directory.is_dir():
            raise RecordsError(f"output {self.directory} is a file; pass a directory (ending in /) for shards.")
        manifest = self.read_manifest()
        if manifest is None and any(not TEMPORARY_PATTERN.match(path.name) for path in self.directory.iterdir()):
            raise RecordsError(
                f"output directory {self.directory} is not empty and holds no {MANIFEST}; pass a new or empty "
                "directory (nothing was written)."
            )
        if manifest is not None:
            differences = self.differences(manifest)
            if differences and not overwrite:
                raise OutputMismatchError(
                    f"output {self.directory} was written with {'; '.join(differences)}; rerun with the same "
                    "options and input to finish it, or pass --overwrite to start over (only the files it wrote "
                    "are removed)."
                )
            if differences:
                self.remove_own_files(manifest)
            else:
                self.complete = self.verified_entries(manifest)
        self.remove_temporary_files()
        if announce:
            self.write_manifest(finished=False)
        return self.complete

    def read_manifest(self) -> dict | None:
        path = self.directory / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RecordsError(f"cannot read {path} ({error}); pass another output directory.") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise RecordsError(f"{path} is not a manifest this tool wrote; pass another output directory.")
        return manifest

    def differences(self, manifest: dict) -> list[str]:
        """What this run would change, as 'pooling='cls' (this run: 'mean')' phrases."""
        if self.source is None or manifest.get("source") is None:
            return ["standard input, which cannot be checked for changes (this run too)"]
        old = {**manifest.get("settings", {}), "shard_size": manifest.get("shard_size"), "input": manifest["source"]}
        new = {**self.settings, "shard_size": self.shard_size, "input": self.source}
        return [f"{key}={old.get(key)!r} (this run: {new.get(key)!r})" for key in new if old.get(key) != new[key]]

    def verified_entries(self, manifest: dict) -> dict[int, dict]:
        entries = {entry["index"]: entry for entry in manifest.get("shards", [])}
        for path in sorted((self.directory / JOURNAL).glob("part-*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                entry = json.loads(path.read_text(encoding="utf-8"))
                entries[int(entry["index"])] = entry
        return {index: entry for index, entry in sorted(entries.items()) if self.is_intact(entry)}

    def is_intact(self, entry: dict) -> bool:
        path = self.directory / shard_name(entry["index"])
        return (
            entry.get("file") == path.name
            and path.is_file()
            and path.stat().st_size == entry.get("bytes")
            and sha256_of(path) == entry.get("sha256")
        )

    def remove_own_files(self, manifest: dict) -> None:
        """Start over: remove the shards, journal entries and manifest of this format, nothing else."""
        for path in self.directory.iterdir():
            if SHARD_PATTERN.match(path.name) or TEMPORARY_PATTERN.match(path.name):
                path.unlink()
        journal = self.directory / JOURNAL
        if journal.is_dir():
            for path in journal.glob("part-*.json"):
                path.unlink()
            with contextlib.suppress(OSError):
                journal.rmdir()
        (self.directory / MANIFEST).unlink()

    def remove_temporary_files(self) -> None:
        """Temporary shards of an interrupted run (this format's names only)."""
        for path in self.directory.iterdir():
            if TEMPORARY_PATTERN.match(path.name):
                path.unlink()

    # --------------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def shard(self, index: int, first_row: int, rename: bool = True) -> Iterator[ShardWriter]:
        """A writer for shard `index` under a temporary name: renamed and journaled if the block succeeds,
        removed if not. With `rename=False` the finished file waits in `pending` for `commit_pending`: a
        stream that cannot be checked beforehand (stdin) names nothing until it has ended well."""
        path = self.directory / shard_name(index)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        writer = ShardWriter(temporary)
        try:
            yield writer
            entry = writer.finish(index, first_row, path.name)
        except BaseException:
            writer.abort()
            raise
        self.pending.append((temporary, entry))
        if rename:
            self.commit_pending()

    def commit_pending(self) -> None:
        for temporary, entry in self.pending:
            os.chmod(temporary, 0o666 & ~current_umask())
            os.replace(temporary, self.directory / entry["file"])
            self.record(entry)
        self.pending.clear()

    def discard_pending(self) -> None:
        """Remove the shards that were never renamed (and the directory, if `open` made it and it is empty)."""
        for temporary, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self.pending.clear()
        if self.created:
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def record(self, entry: dict) -> None:
        """Journal a renamed shard (any process may: the driver rewrites the manifest from these)."""
        write_text_atomically(self.directory / JOURNAL / entry["file"].replace(".parquet", ".json"), json.dumps(entry))
        self.complete[entry["index"]] = entry

    def write_manifest(self, finished: bool, extra: dict | None = None) -> None:
        shards = [self.complete[index] for index in sorted(self.complete)]
        manifest = {
            "format": FORMAT_NAME,
            "complete": finished,
            "settings": self.settings,
            "shard_size": self.shard_size,
            "source": self.source,
            "count": sum(entry["rows"] for entry in shards),
            "shards": shards,
            **(extra or {}),
        }
        write_text_atomically(self.directory / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")

    def refresh(self) -> None:
        """Take in the journal entries other processes wrote (Ray's write tasks)."""
        self.complete.update(self.verified_entries({"shards": list(self.complete.values())}))


class ShardWriter:
    """Row groups appended to one temporary parquet file."""

    def __init__(self, temporary: str):
        self.temporary = temporary
        self.rows = 0
        self._writer = None

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self.temporary, table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def finish(self, index: int, first_row: int, name: str) -> dict:
        """Close, flush to disk and describe the file (its journal entry)."""
        if self._writer is None:
            raise RuntimeError("a shard needs at least one table (possibly empty) to have a schema")
        self._writer.close()
        with open(self.temporary, "rb") as stream:
            os.fsync(stream.fileno())
        size, digest = os.path.getsize(self.temporary), sha256_of(self.temporary)
        return {
            "index": index,
            "file": name,
            "first_row": first_row,
            "rows": self.rows,
            "bytes": size,
            "sha256": digest,
        }

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


__all__ = [
    "JOURNAL",
    "MANIFEST",
    "ROW_COLUMN",
    "VECTOR_DTYPES",
    "OutputMismatchError",
    "ShardWriter",
    "ShardedOutput",
    "classification_columns",
    "embedding_columns",
    "id_column",
    "is_directory_output",
    "sha256_of",
    "shard_name",
]
