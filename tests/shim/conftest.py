"""Fixtures for the shim: a recording Gateway, and a recorder on every task signal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from flask_app.shim import signals
from tests.shim.helpers import FakeGateway, Recorder

TASK_SIGNALS = [
    signals.before_task_publish,
    signals.after_task_publish,
    signals.task_received,
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
    signals.task_retry,
    signals.task_revoked,
    signals.task_unknown,
    signals.task_rejected,
    signals.task_internal_error,
]


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def app_overrides(gateway: FakeGateway) -> dict[str, object]:
    return {"QSTASH_GATEWAY": gateway, "APP_BASE_URL": "http://app.test"}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with ExitStack() as stack:
        for sig in TASK_SIGNALS:
            stack.enter_context(sig.connected_to(rec))
        yield rec
