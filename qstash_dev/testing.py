"""Run a real qstash_dev server inside a test process.

Public API (kept small and stable):

    from qstash_dev.testing import run_server, RunningServer

    with run_server(port=0, retry_delay_scale=0.001, data_dir=None) as srv:
        client = qstash.QStash(srv.token, base_url=srv.url, retry=False)
        receiver = qstash.Receiver(srv.current_signing_key, srv.next_signing_key)
        ...
        srv.trigger_schedule(schedule_id)   # fire a schedule now (test hook)
        srv.wait_idle(timeout=5)            # until nothing is pending or in flight
        srv.broker                          # the in-process Broker, to inspect state

`run_server(...)` starts the HTTP API on 127.0.0.1 (port 0 = a free port) in background
threads and stops it on exit. Credentials default to the official dev server's user 1 (or
`token=`/`current_signing_key=`/`next_signing_key=` arguments). For pytest, wrap it in a fixture:

    @pytest.fixture
    def qstash_server():
        with run_server(retry_delay_scale=0.001) as srv:
            yield srv
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qstash_dev.engine import Broker
from qstash_dev.server import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    DevServer,
    Settings,
)

__all__ = ["RunningServer", "run_server"]


@dataclass(frozen=True)
class RunningServer:
    """Handle on a server started by `run_server`."""

    url: str
    token: str
    server: DevServer

    @property
    def current_signing_key(self) -> str:
        """The key deliveries are signed with now (follows rotations)."""
        return self.server.broker.current_key

    @property
    def next_signing_key(self) -> str:
        """The next key (follows rotations)."""
        return self.server.broker.next_key

    @property
    def broker(self) -> Broker:
        """The in-process state (read-only use recommended)."""
        return self.server.broker

    def trigger_schedule(self, schedule_id: str) -> list[str]:
        """Fire a schedule now, as if its cron time had come; return the message ids."""
        return self.server.broker.trigger_schedule(schedule_id)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no message is pending or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.broker.pending_count() == 0:
                return True
            time.sleep(0.01)
        return False


@contextmanager
def run_server(
    port: int = 0,
    retry_delay_scale: float = 0.001,
    data_dir: str | Path | None = None,
    *,
    token: str = DEV_TOKEN,
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY,
    next_signing_key: str = DEV_NEXT_SIGNING_KEY,
    clock_offset_s: float = 0.0,
) -> Iterator[RunningServer]:
    """Start a server on 127.0.0.1 for the duration of the block.

    clock_offset_s: the server's clock runs this far ahead (negative: behind) in the
    signatures it issues; `srv.broker.clock_offset_s` changes it while running.
    """
    settings = Settings(
        port=port,
        token=token,
        current_signing_key=current_signing_key,
        next_signing_key=next_signing_key,
        data_dir=str(data_dir) if data_dir is not None else None,
        retry_delay_scale=retry_delay_scale,
        quiet=True,
        clock_offset_s=clock_offset_s,
    )
    server = DevServer(settings)
    server.start()
    try:
        yield RunningServer(url=server.url, token=token, server=server)
    finally:
        server.stop()
