"""fairseq XLM-R checkpoints -> verified transformers repositories (safetensors), and publishing them.

```python
>>> from conversion import convert_fairseq_checkpoint
>>> convert_fairseq_checkpoint("xlmr.base.v0.tar.gz", "xlmr-base-v0")        # verified, atomic
>>> from conversion import push_to_hub
>>> push_to_hub("xlmr-base-v0", "me/xlmr-base-v0")                           # one commit
```

fairseq itself is never imported: checkpoints are read with `torch.load(weights_only=True)`.
Synthetic fairseq checkpoints for tests, benchmarks and the demo are in `conversion.synthetic`.
"""

from importlib import import_module

_EXPORTS = {
    "convert_fairseq_checkpoint": "convert",
    "ConversionError": "convert",
    "ConversionResult": "convert",
    "CheckpointError": "checkpoint",
    "read_fairseq_checkpoint": "checkpoint",
    "push_to_hub": "hub",
    "reference_forward": "reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'conversion' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
