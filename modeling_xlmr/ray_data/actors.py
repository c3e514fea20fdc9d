"""The predictor Ray Data runs on an actor pool, and the `Dataset` -> `Dataset` entry points.

Each actor loads the model once (`__init__`), then turns every block it is handed into vectors (or
labels) with the package's engine: the block's texts are tokenized, sorted by length and cut into
token-budget batches that run through the packed fast path, and the rows come back in block order.
Ray restarts an actor that dies and retries its task (Ray Data's defaults for actor pools), so a
killed actor costs time, not rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..common.dependencies import require
from ..common.dtypes import parse_dtype
from ..hub.heads import default_head, label_names
from ..hub.loading import load_repo
from ..inference import batching
from ..inference.engine import InferenceEngine
from ..inference.shards import ROW_COLUMN
from ..inference.streaming import Classifier, Embedder


class XLMRPredictor:
    """A callable class for `Dataset.map_batches` (pyarrow batches): appends `embedding` (task "embed")
    or `label`, `score`, `probabilities` (task "classify") computed from `text_column`.

    `options` go to `Embedder` (pooling, normalize, long_text, chunk_overlap, max_tokens_per_batch,
    vector_dtype) or `Classifier` (long_text, max_tokens_per_batch); `drop_columns` are removed from
    the output (e.g. the text, once embedded).
    """

    def __init__(
        self,
        model: str,
        task: str = "embed",
        text_column: str = "text",
        drop_columns: Sequence[str] = (),
        revision: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        num_threads: int | None = None,
        head: str | None = None,
        **options,
    ):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        repo = load_repo(model, device_map=device or _default_device(), dtype=parse_dtype(dtype), revision=revision)
        engine = InferenceEngine(repo.model, repo.tokenizer)
        self.text_column, self.drop_columns = text_column, list(drop_columns)
        if task == "embed":
            self.predictor = Embedder(engine, **options)
        elif task == "classify":
            heads = {name: module for name, (module, _) in repo.heads.items()}
            name = head if head is not None else default_head(heads, getattr(repo.model, "classifier", None))
            if name not in heads:
                raise ValueError(f"no classification head named {name!r} (heads: {', '.join(map(repr, heads))}).")
            labels = label_names(heads[name], repo.heads[name][1])
            self.predictor = Classifier(engine, heads[name], labels, name, **options)
        else:
            raise ValueError(f"task={task!r} is not supported; use 'embed' or 'classify'.")

    def __call__(self, batch):
        if self.text_column not in batch.column_names:
            raise ValueError(
                f"the dataset has no column {self.text_column!r} (columns: {', '.join(batch.column_names)}); "
                "pass text_column=NAME."
            )
        texts = batch.column(self.text_column).to_pylist()
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"column {self.text_column!r} holds a null or a non-text value; fill or drop those rows.")
        try:
            columns, metadata = self.predictor.columns(texts), self.predictor.metadata()
        except batching.TextTooLongError as error:  # number it as in the whole input when the rows say where
            if ROW_COLUMN not in batch.column_names:
                raise
            raise error.shifted(batch.column(ROW_COLUMN)[0].as_py()) from None
        output = batch.drop_columns(
            [name for name in batch.column_names if name in columns or name in self.drop_columns]
        )
        for name, column in columns.items():
            output = output.append_column(name, column)
        return output.replace_schema_metadata({**(output.schema.metadata or {}), **metadata}) if metadata else output


def _default_device() -> str:
    """The GPU Ray gave this actor (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    import ray

    return "cuda" if ray.get_gpu_ids() else "cpu"


def embed_dataset(
    ds,
    model: str,
    *,
    text_column: str = "text",
    pooling: str = "cls",
    normalize: bool = False,
    long_text: str = "error",
    max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
    vector_dtype: str = "float32",
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    drop_columns: Sequence[str] = (),
):
    """`ds` with an `embedding` column (a fixed-size list of float32, or float16) per row of `text_column`.

    Runs `XLMRPredictor` on an actor pool of `concurrency` actors (an int, or (min, max) to autoscale),
    each holding `num_cpus` CPUs (its torch threads) and `num_gpus` GPUs. `batch_size` rows per call
    (None: whole blocks, the best length sorting); inside a call the texts run as length-sorted
    batches of at most `max_tokens_per_batch` tokens.
    """
    predictor = {"model": model, "task": "embed", "text_column": text_column, "drop_columns": list(drop_columns)}
    predictor.update(dtype=dtype, revision=revision, max_tokens_per_batch=max_tokens_per_batch)
    predictor.update(pooling=pooling, normalize=normalize, long_text=long_text, vector_dtype=vector_dtype)
    return map_dataset(ds, predictor, concurrency, num_cpus, num_gpus, batch_size)


def classify_dataset(
    ds,
    model: str,
    *,
    head: str | None = None,
    text_column: str = "text",
    long_text: str = "error",
    max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    drop_columns: Sequence[str] = (),
):
    """`ds` with `label` (str), `score` (float32) and `probabilities` (fixed-size list of float32, in the
    head's label order) per row of `text_column`; options as `embed_dataset`."""
    predictor = {"model": model, "task": "classify", "text_column": text_column, "drop_columns": list(drop_columns)}
    predictor.update(dtype=dtype, revision=revision, max_tokens_per_batch=max_tokens_per_batch)
    predictor.update(head=head, long_text=long_text)
    return map_dataset(ds, predictor, concurrency, num_cpus, num_gpus, batch_size)


def map_dataset(
    ds,
    predictor: dict,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int | None = None,
):
    """`ds.map_batches(XLMRPredictor(**predictor))` on an actor pool: the body of the entry points."""
    require("ray")
    threads = None if num_gpus else max(1, int(num_cpus))  # on CPU, torch uses the cores Ray reserved
    return ds.map_batches(
        XLMRPredictor,
        fn_constructor_kwargs={**predictor, "num_threads": threads},
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )


__all__ = ["XLMRPredictor", "classify_dataset", "embed_dataset", "map_dataset"]
