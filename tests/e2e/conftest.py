"""End-to-end fixtures: a real qstash_dev, a real AimHarder sandbox, the app on real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from aimharder_sandbox.testing import Sandbox, run_sandbox
from flask_app import close, create_app
from qstash_dev.testing import RunningServer, run_server


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def qstash_keys() -> dict[str, str]:
    """Override to run qstash_dev with other signing keys than the app's."""
    return {}


@pytest.fixture
def qstash_server(qstash_keys: dict[str, str]) -> Iterator[RunningServer]:
    with run_server(retry_delay_scale=0.001, **qstash_keys) as srv:
        yield srv


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as sb:
        yield sb


@pytest.fixture
def live_app(
    app_config: dict[str, object], qstash_server: RunningServer, sandbox: Sandbox
) -> Iterator[Any]:
    """The app served by a threaded werkzeug server; APP_BASE_URL points at it."""
    from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY, DEV_QSTASH_NEXT_SIGNING_KEY

    config = {key: value for key, value in app_config.items() if key != "AIMHARDER_CLIENT"} | {
        "QSTASH_ENABLED": True,
        "QSTASH_URL": qstash_server.url,
        "QSTASH_TOKEN": qstash_server.token,
        "QSTASH_CURRENT_SIGNING_KEY": DEV_QSTASH_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": DEV_QSTASH_NEXT_SIGNING_KEY,
        "AIMHARDER_BASE_URL": sandbox.url,
        "QSTASH_LEAD_SECONDS": 1.0,
    }
    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["APP_BASE_URL"] = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app
    server.shutdown()
    thread.join(timeout=5)
    close(app)
