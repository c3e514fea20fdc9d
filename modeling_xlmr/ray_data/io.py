"""Ray's read and write tasks for `extract_with_ray`: light on imports (no torch), since each runs in a
fresh worker process. A read task reads one shard's rows (`__row`, `id`, `text`) with this package's
readers; a write task writes the whole shards it is handed through `ShardedOutput` (temporary name,
fsync, sha256, rename, journal entry)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask

from ..inference.shards import ROW_COLUMN, ShardedOutput, id_column
from ..inference.sources import InputPlan, Start, TextInput

ROW = ROW_COLUMN


def read_shard(source: TextInput, start: Start, count: int, id_type: str) -> list:
    """The `count` rows from `start` as one Arrow table: a block is a shard."""
    import pyarrow as pa

    source.id_type = id_type
    rows = list(itertools.islice(source.rows(start), count))
    table = {
        ROW: pa.array(range(start.row, start.row + len(rows)), type=pa.int64()),
        "id": id_column([row.id for row in rows], id_type),
        "text": pa.array([row.text for row in rows], type=pa.string()),
    }
    return [pa.table(table)]


class ShardReader(Datasource):
    """One read task per shard still to do."""

    def __init__(self, source: TextInput, plan: InputPlan, shards: list[int]):
        super().__init__()
        self.source, self.plan, self.shards = source, plan, shards

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        tasks = []
        for index in self.shards:
            count = self.plan.shard_rows(index)
            metadata = BlockMetadata(num_rows=count, size_bytes=None, exec_stats=None, input_files=None)
            read = functools.partial(read_shard, self.source, self.plan.starts[index], count, self.plan.id_type)
            tasks.append(ReadTask(read, metadata))
        return tasks


class ShardWriterSink(Datasink):
    """Each write task writes the shards whose rows it was handed, whole shards only."""

    def __init__(self, output: ShardedOutput, plan: InputPlan):
        self.output, self.plan = output, plan

    def write(self, blocks, ctx) -> list[dict]:
        import pyarrow as pa
        import pyarrow.compute as pc

        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [table for table in tables if table.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables)
        shard_of_row = table.column(ROW).to_numpy() // self.plan.shard_size
        entries = []
        for index in np.unique(shard_of_row).tolist():
            part = table.filter(pa.array(shard_of_row == index)).sort_by(ROW)
            expected, first = self.plan.shard_rows(index), index * self.plan.shard_size
            if part.num_rows != expected or pc.min(part.column(ROW)).as_py() != first:
                raise RuntimeError(
                    f"shard {index} reached a write task with {part.num_rows} of its {expected} rows; Ray split its "
                    "block (raise DataContext.target_max_block_size or lower --shard-size)."
                )
            with self.output.shard(index, first) as writer:
                writer.write(part.drop_columns([ROW]))
            entries.append(self.output.complete[index])
        return entries


__all__ = ["ROW", "ShardReader", "ShardWriterSink", "read_shard"]
