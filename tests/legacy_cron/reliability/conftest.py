"""Reliability scenarios of the cron path: the end-to-end stack of tests/e2e."""

from tests.e2e.conftest import live_app, qstash_keys, qstash_server, sandbox  # noqa: F401
