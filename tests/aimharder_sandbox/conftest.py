"""Fixtures for the sandbox's own tests: a running sandbox and an HTTP client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aimharder_sandbox.testing import Sandbox, run_sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5.0) as client:
        yield client
