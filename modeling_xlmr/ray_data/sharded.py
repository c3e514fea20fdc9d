"""`xlmr extract --engine ray`: the one-machine sharded format, written by Ray Data.

The driver scans the input (every record checked, shard starts noted: `sources.TextInput.scan`) and
opens the output directory (`shards.ShardedOutput`: settings checked, complete shards verified). Then
Ray runs, streaming:

    read task per missing shard (seeks to its start, reads its rows: `__row`, `id`, `text`)
      -> XLMRPredictor on an actor pool (the model loaded once per actor; one block = one shard)
      -> write task per shard (temporary name, fsync, sha256, rename, journal entry)

and the driver rewrites the manifest from the journal. Ray's own readers cannot give a row its line
number or name a bad line, so the read tasks run this package's readers; the writes go through Ray's
`Datasink` API. The output directory must be reachable under the same path from every node (one
machine, or a shared filesystem).
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from ..common.dependencies import require
from ..inference.shards import ShardedOutput, id_column
from ..inference.sources import InputPlan, Start, TextInput
from ..inference.streaming import LABELS_KEY, manifest_metadata, task_settings
from .actors import map_dataset

ROW = "__row"


def _read_shard(source: TextInput, start: Start, count: int, id_type: str):
    import itertools

    import pyarrow as pa

    source.id_type = id_type
    rows = list(itertools.islice(source.rows(start), count))
    return [
        pa.table(
            {
                ROW: pa.array(range(start.row, start.row + len(rows)), type=pa.int64()),
                "id": id_column([row.id for row in rows], id_type),
                "text": pa.array([row.text for row in rows], type=pa.string()),
            }
        )
    ]


def _shard_datasource(source: TextInput, plan: InputPlan, shards: list[int]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ShardReader(Datasource):
        """One read task per shard still to do."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for index in shards:
                count = plan.shard_rows(index)
                metadata = BlockMetadata(num_rows=count, size_bytes=None, exec_stats=None, input_files=None)
                read = functools.partial(_read_shard, source, plan.starts[index], count, plan.id_type)
                tasks.append(ReadTask(read, metadata))
            return tasks

    return ShardReader()


def _shard_datasink(output: ShardedOutput, plan: InputPlan):
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ShardWriterSink(Datasink):
        """Each write task writes the shards whose rows it was handed (whole shards only)."""

        def write(self, blocks, ctx):
            import pyarrow as pa
            import pyarrow.compute as pc

            tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
            tables = [table for table in tables if table.num_rows]
            if not tables:
                return []
            table = pa.concat_tables(tables)
            shard_of_row = table.column(ROW).to_numpy() // plan.shard_size
            entries = []
            for index in np.unique(shard_of_row).tolist():
                part = table.filter(pa.array(shard_of_row == index)).sort_by(ROW)
                expected = plan.shard_rows(index)
                first = index * plan.shard_size
                if part.num_rows != expected or pc.min(part.column(ROW)).as_py() != first:
                    raise RuntimeError(
                        f"shard {index} reached a write task with {part.num_rows} of its {expected} rows; Ray split "
                        "its block (raise DataContext.target_max_block_size or lower --shard-size)."
                    )
                with output.shard(index, first) as writer:
                    writer.write(part.drop_columns([ROW]))
                entries.append(output.complete[index])
            return entries

    return ShardWriterSink()


def extract_with_ray(
    predictor: dict,
    source: TextInput,
    directory: str | os.PathLike,
    settings: dict,
    shard_size: int,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write `source` through `XLMRPredictor(**predictor)` on Ray into the sharded directory format.

    `address`: None starts (or uses) a local Ray; "auto" or "ray://..." joins a cluster started with
    `ray start --head`. Returns the manifest's summary, as `streaming.extract_to_directory`.
    """
    ray = require("ray")
    if source.is_stdin:
        raise ValueError("--engine ray re-reads its input in parallel: save standard input to a file and pass that.")
    plan = source.scan(shard_size)
    options = {key: value for key, value in predictor.items() if key != "task"}
    output = ShardedOutput(directory, {**settings, **task_settings(predictor["task"], **options)}, plan.identity(), shard_size)
    complete = output.open(overwrite)
    todo = [index for index in range(plan.num_shards) if index not in complete]
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=progress)
        with _data_context(progress):
            dataset = ray.data.read_datasource(_shard_datasource(source, plan, todo))
            dataset = map_dataset(dataset, {**predictor, "drop_columns": ["text"]}, concurrency, num_cpus, num_gpus)
            try:
                dataset.write_datasink(_shard_datasink(output, plan))
            except Exception as error:
                raise user_error(error) from error
    output.refresh()
    missing = [index for index in range(plan.num_shards) if index not in output.complete]
    if missing:
        raise RuntimeError(f"Ray finished but shards {missing[:5]} are missing from {directory}; rerun to finish them.")
    output.write_manifest(finished=True, extra=_labels(output))
    return {"rows": plan.rows, "shards": len(output.complete), "computed": len(todo)}


def _labels(output: ShardedOutput) -> dict:
    """A classify output's label order, from a shard's schema (the actors know it; the driver does not)."""
    import pyarrow.parquet as pq

    if not output.complete:
        return {}
    first = output.complete[min(output.complete)]
    metadata = pq.read_schema(output.directory / first["file"]).metadata or {}
    found = {key.decode(): value.decode() for key, value in metadata.items() if key.decode() == LABELS_KEY}
    return manifest_metadata(found)


@contextlib.contextmanager
def _data_context(progress: bool):
    """Blocks never split (a block is a shard and a write task needs it whole); Ray's bars on request."""
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = context.target_max_block_size, context.enable_progress_bars
    context.target_max_block_size, context.enable_progress_bars = None, progress
    try:
        yield context
    finally:
        context.target_max_block_size, context.enable_progress_bars = saved


def user_error(error: BaseException) -> BaseException:
    """The ValueError/OSError a Ray task raised (one line for the CLI), else `error` itself."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ValueError, OSError)) and type(current).__module__.split(".")[0] != "ray":
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return error


__all__ = ["extract_with_ray", "user_error"]
