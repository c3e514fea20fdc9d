"""The shared fixtures live in tests/support/fixtures.py, loaded once for the whole suite."""

pytest_plugins = ("tests.support.fixtures",)
