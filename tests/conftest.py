"""Shared fixtures live in tests/fixtures/ and are loaded as plugins."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.aws"]
