"""XLM-R batch inference on Ray Data: a stateful predictor on an actor pool, and sharded extraction.

```python
import ray
from modeling_xlmr.ray_data import embed_dataset, classify_dataset

ds = ray.data.read_parquet("s3://bucket/docs/")                 # any Dataset with a text column
vectors = embed_dataset(ds, "xlmr.base", pooling="mean", concurrency=4, num_gpus=1)
vectors.write_parquet("s3://bucket/vectors/")                   # `embedding`: fixed-size list of float32
```

`xlmr extract --engine ray` (`extract_with_ray`) writes the same sharded directory as the one-machine
path (`modeling_xlmr.inference.shards`), resumable the same way. Ray is optional:
`pip install 'xlmr[ray]'`; without it these functions stop with one line naming that command.
Names are imported lazily: Ray's read and write tasks import `io` in fresh processes without torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "XLMRPredictor": "actors",
    "classify_dataset": "actors",
    "embed_dataset": "actors",
    "extract_with_ray": "sharded",
}
__all__ = ["XLMRPredictor", "classify_dataset", "embed_dataset", "extract_with_ray"]

if TYPE_CHECKING:
    from .actors import XLMRPredictor, classify_dataset, embed_dataset
    from .sharded import extract_with_ray


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling_xlmr.ray_data' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
