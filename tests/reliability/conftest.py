"""Reliability fixtures: the end-to-end stack of tests/e2e (real qstash_dev, sandbox, HTTP app)."""

from tests.e2e.conftest import live_app, qstash_keys, qstash_server, sandbox  # noqa: F401
