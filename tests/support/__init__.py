"""What the tests and the benchmarks build on: tiny models and repos, synthetic checkpoints and data, the
multilingual corpus, subprocess helpers. The pytest fixtures over them are in `fixtures` (loaded once
through `pytest_plugins` in tests/conftest.py); no test module imports another."""
