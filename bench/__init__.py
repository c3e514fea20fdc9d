"""Benchmarks (speed is a ratio against stock transformers, measured in the same run). Run them from the
repository root as modules, e.g. `python -m bench.bench_speed --quick`, so that they share the tests'
builders through `tests.support`."""
