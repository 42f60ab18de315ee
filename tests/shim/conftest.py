"""Fixtures for the shim: a recording Gateway, and a recorder on every task signal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from werkzeug.serving import make_server

from flask_app.shim import signals
from qstash_dev.testing import run_server
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


# -- end to end: a real qstash_dev and the app served over HTTP ------------------------------


@pytest.fixture
def qstash_server():
    with run_server(retry_delay_scale=0.001) as srv:
        yield srv


@pytest.fixture
def http_server():
    """A threaded werkzeug server on a free port; the app is plugged in once created."""
    holder = {}

    def wsgi(environ, start_response):
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, holder
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def served_by_qstash(qstash_server, http_server):
    """The config that makes the app publish to qstash_dev and receive at the HTTP server."""
    server, _ = http_server
    return {
        "APP_BASE_URL": f"http://127.0.0.1:{server.server_port}",
        "QSTASH_URL": qstash_server.url,
        "QSTASH_TOKEN": qstash_server.token,
        "QSTASH_CURRENT_SIGNING_KEY": qstash_server.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": qstash_server.next_signing_key,
    }


@pytest.fixture
def live(app, http_server, qstash_server):
    """The app, served: QStash deliveries reach it (and have ended before the app is closed)."""
    _, holder = http_server
    holder["app"] = app
    yield app
    # A result is ready before its delivery's request ends (the lease is released, what follows
    # is sent): let every delivery end, so none uses the database after the engine is disposed.
    qstash_server.wait_idle(timeout=30)
