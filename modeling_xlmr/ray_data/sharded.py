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
import os

from ..common.dependencies import require
from ..inference.shards import ShardedOutput
from ..inference.sources import TextInput
from ..inference.streaming import LABELS_KEY, manifest_metadata, task_settings
from .actors import map_dataset


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
    output = ShardedOutput(
        directory, {**settings, **task_settings(predictor["task"], **options)}, plan.identity(), shard_size
    )
    complete = output.open(overwrite)
    todo = [index for index in range(plan.num_shards) if index not in complete]
    if todo:
        if not ray.is_initialized():  # a Ray started by the caller (or by a test) is used as it is
            local = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, log_to_driver=progress, **local)
        with _data_context(progress):
            # Reading and writing a shard is light next to the model: those tasks take no CPU from the actors.
            from .io import ShardReader, ShardWriterSink

            reader = ShardReader(source, plan, todo)
            dataset = ray.data.read_datasource(reader, num_cpus=0, override_num_blocks=len(todo))
            dataset = map_dataset(dataset, {**predictor, "drop_columns": ["text"]}, concurrency, num_cpus, num_gpus)
            try:
                dataset.write_datasink(ShardWriterSink(output, plan), ray_remote_args={"num_cpus": 0})
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
    wanted = {"target_max_block_size": None, "read_op_min_num_blocks": 1, "enable_progress_bars": progress}
    saved = {name: getattr(context, name) for name in wanted}
    for name, value in wanted.items():
        setattr(context, name, value)
    try:
        yield context
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def user_error(error: BaseException) -> BaseException:
    """The ValueError/OSError a Ray task raised (one line for the CLI), else `error` itself."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ValueError, OSError)) and type(current).__module__.split(".")[0] != "ray":
            return current
        if isinstance(current, ModuleNotFoundError) and (current.name or "").startswith("modeling_xlmr"):
            return OSError(
                f"Ray's workers cannot import {current.name}: install this version of xlmr on every node "
                "(and start `ray start` where it is importable)."
            )
        current = getattr(current, "cause", None) or current.__cause__
    return error


__all__ = ["extract_with_ray", "user_error"]
