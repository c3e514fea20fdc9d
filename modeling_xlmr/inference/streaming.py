"""Streaming, sharded, resumable extraction on one machine: input blocks in, parquet shards out.

    input (sources.TextInput) --scan: check every record, count rows, note shard starts-->
    for each shard not complete yet: seek to its start, read it in blocks of `block_rows` texts,
    run each block through the engine (length-sorted token-budget batches inside the block) and
    append it to the shard's temporary file as a row group --> rename, journal, manifest (shards)

Memory is bounded by one block of texts and its vectors, whatever the size of the corpus. The same
predictors (`Embedder`, `Classifier`) turn a block into Arrow columns for the Ray actors
(`modeling_xlmr.ray_data`), so both engines write the same rows.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from . import batching
from .records import RecordsError
from .shards import ShardedOutput, classification_columns, embedding_columns, id_column
from .sources import InputPlan, Row, TextInput

if TYPE_CHECKING:  # annotations only: the engine pulls in transformers, which the `xlmr` parser need not load
    from torch import nn

    from .engine import InferenceEngine

DEFAULT_SHARD_SIZE = 100_000
DEFAULT_BLOCK_ROWS = 2048
BLOCK_CHARS = 4_000_000  # a block also ends at this many characters: long documents stay bounded too
LABELS_KEY = "labels"  # schema metadata of classify shards: the order of `probabilities`


class Embedder:
    """Texts -> {"embedding"}: the engine's `embed` with fixed options (what a sharded output records)."""

    def __init__(
        self,
        engine: InferenceEngine,
        pooling: str = "cls",
        normalize: bool = False,
        long_text: str = "error",
        chunk_overlap: int = batching.DEFAULT_CHUNK_OVERLAP,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        vector_dtype: str = "float32",
        prompt: str = "",
        max_length: int | None = None,
    ):
        batching.check_choice("pooling", pooling, batching.POOLINGS)
        batching.check_choice("long_text", long_text, batching.LONG_TEXT_POLICIES)
        batching.check_choice("vector dtype", vector_dtype, ("float32", "float16"))
        self.engine = engine
        self.options = {"pooling": pooling, "normalize": normalize, "long_text": long_text}
        self.options.update(chunk_overlap=chunk_overlap, prompt=prompt, max_length=max_length)
        self.max_tokens_per_batch = max_tokens_per_batch
        self.vector_dtype = vector_dtype

    def settings(self) -> dict:
        return task_settings("embed", **self.options, vector_dtype=self.vector_dtype)

    def metadata(self) -> dict:
        return {}

    def columns(self, texts: Sequence[str], on_tokens=None) -> dict:
        vectors = self.engine.embed(
            list(texts), max_tokens_per_batch=self.max_tokens_per_batch, on_tokens=on_tokens, **self.options
        )
        return embedding_columns(vectors.numpy(), self.vector_dtype)


class Classifier:
    """Texts -> {"label", "score", "probabilities"} from one sentence head (`head_name`: as the user named
    it, None for the default one: what a sharded output records)."""

    def __init__(
        self,
        engine: InferenceEngine,
        head: nn.Module,
        labels: Sequence[str],
        head_name: str | None = None,
        long_text: str = "error",
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
    ):
        batching.check_choice("long_text", long_text, ("error", "truncate"))
        self.engine, self.head, self.labels = engine, head, list(labels)
        self.head_name, self.long_text = head_name, long_text
        self.max_tokens_per_batch = max_tokens_per_batch

    def settings(self) -> dict:
        return task_settings("classify", head=self.head_name, long_text=self.long_text)

    def metadata(self) -> dict:
        """The label order of `probabilities`, kept in each shard's schema (and the manifest)."""
        return {LABELS_KEY: json.dumps(self.labels, ensure_ascii=False)}

    def columns(self, texts: Sequence[str], on_tokens=None) -> dict:
        probabilities = self.engine.class_probabilities(
            list(texts), self.head, len(self.labels), self.max_tokens_per_batch, self.long_text, on_tokens=on_tokens
        )
        return classification_columns(probabilities.numpy(), self.labels)


def manifest_metadata(metadata: dict) -> dict:
    """Shard schema metadata (JSON strings) as manifest fields (JSON values)."""
    return {key: json.loads(value) for key, value in metadata.items()}


def task_settings(task: str, **options) -> dict:
    """What a sharded output records of the task, defaults filled in (both engines build theirs here)."""
    if task == "embed":
        defaults = {"pooling": "cls", "normalize": False, "long_text": "error"}
        defaults.update(
            chunk_overlap=batching.DEFAULT_CHUNK_OVERLAP, vector_dtype="float32", prompt="", max_length=None
        )
    else:
        defaults = {"head": None, "long_text": "error"}
    return {"task": task, **{key: options.get(key, default) for key, default in defaults.items()}}


def extract_to_directory(
    predictor: Embedder | Classifier,
    source: TextInput,
    directory: str | os.PathLike,
    settings: dict,
    shard_size: int = DEFAULT_SHARD_SIZE,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    overwrite: bool = False,
    progress: bool = True,
    plan: InputPlan | None = None,
) -> dict:
    """Write `source`'s rows through `predictor` into parquet shards under `directory` (see `shards`);
    a rerun with the same `settings` and input finishes an interrupted run. Returns the manifest's summary.

    A file input is checked whole (every record, before anything is written) and its shards are
    skipped or sought directly (pass `plan` if the input was scanned already); standard input is read
    once, its shards kept under temporary names until it has ended well.
    """
    if block_rows < 1:
        raise ValueError(f"block size must be positive, got {block_rows}.")
    settings = {**settings, **predictor.settings()}
    if source.is_stdin:
        return _extract_stream(predictor, source, directory, settings, shard_size, block_rows, overwrite, progress)
    plan = plan if plan is not None else source.scan(shard_size)
    output = ShardedOutput(directory, settings, plan.identity(), shard_size)
    complete = output.open(overwrite)
    todo = [index for index in range(max(plan.num_shards, 1)) if index not in complete]
    with Progress(sum(plan.shard_rows(index) for index in todo), progress) as bar:
        for index in todo:
            rows: Iterable[Row] = []
            if plan.num_shards:
                rows = itertools.islice(source.rows(plan.starts[index]), plan.shard_rows(index))
            with output.shard(index, index * shard_size) as writer:
                _write_blocks(predictor, rows, source, block_rows, writer, bar)
            output.write_manifest(finished=False)
    output.write_manifest(finished=True, extra=manifest_metadata(predictor.metadata()))
    return {"rows": plan.rows, "shards": len(output.complete), "computed": len(todo)}


def _extract_stream(predictor, source, directory, settings, shard_size, block_rows, overwrite, progress) -> dict:
    output = ShardedOutput(directory, settings, None, shard_size)
    output.open(overwrite, announce=False)
    rows, total = source.rows(), 0
    try:
        with Progress(None, progress) as bar:
            for index in itertools.count():
                first = next(rows, None)
                if first is None and index > 0:
                    break
                head = [] if first is None else [first]
                counted = _Counter(itertools.chain(head, itertools.islice(rows, shard_size - 1)))
                with output.shard(index, total, rename=False) as writer:
                    _write_blocks(predictor, counted, source, block_rows, writer, bar)
                total += counted.count
    except BaseException:
        output.discard_pending()
        raise
    output.commit_pending()
    output.write_manifest(finished=True, extra=manifest_metadata(predictor.metadata()))
    return {"rows": total, "shards": len(output.complete), "computed": len(output.complete)}


class _Counter:
    """Counts the rows an iterator has given."""

    def __init__(self, rows: Iterator[Row]):
        self.rows, self.count = rows, 0

    def __iter__(self):
        for row in self.rows:
            self.count += 1
            yield row


def _write_blocks(predictor, rows: Iterable[Row], source: TextInput, block_rows: int, writer, bar: Progress) -> None:
    """The rows through `predictor`, one block at a time, as row groups of the shard (an empty shard
    still gets an empty table: its schema). The id type is the source's, fixed by its first record."""
    import pyarrow as pa

    wrote = False
    for block in blocks(rows, block_rows):
        try:
            columns = predictor.columns([row.text for row in block], on_tokens=bar.add_tokens)
        except batching.TextTooLongError as error:  # name the line, not the text's place in its block
            row = block[error.text_index]
            where = f"{'standard input' if row.path == '-' else row.path} line {row.line}: the text"
            raise RecordsError(str(error).replace(f"text {error.text_index} has", f"{where} has", 1)) from None
        ids = id_column([row.id for row in block], source.id_type or "position")
        writer.write(pa.table({"id": ids, **columns}, metadata=predictor.metadata()))
        bar.add_texts(len(block))
        wrote = True
    if not wrote:
        empty = {"id": id_column([], source.id_type or "position"), **predictor.columns([])}
        writer.write(pa.table(empty, metadata=predictor.metadata()))


def blocks(rows: Iterable[Row], block_rows: int, block_chars: int = BLOCK_CHARS) -> Iterator[list[Row]]:
    """Consecutive lists of at most `block_rows` rows and (unless a single row is longer) `block_chars`
    characters."""
    block, chars = [], 0
    for row in rows:
        if block and (len(block) == block_rows or chars + len(row.text) > block_chars):
            yield block
            block, chars = [], 0
        block.append(row)
        chars += len(row.text)
    if block:
        yield block


class Progress:
    """A bar over texts with texts/s, tokens/s and the ETA (total None: no ETA, e.g. stdin)."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar = tqdm(total=total, unit="text", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
        self.tokens, self.started = 0, time.perf_counter()

    def add_tokens(self, count: int) -> None:
        self.tokens += count

    def add_texts(self, count: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
        self.bar.update(count)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "DEFAULT_SHARD_SIZE",
    "Classifier",
    "Embedder",
    "Progress",
    "blocks",
    "extract_to_directory",
    "manifest_metadata",
    "task_settings",
]
