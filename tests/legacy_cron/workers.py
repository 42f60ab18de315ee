"""Processes that run cron ticks (spawned by the multi-process and crash tests, not imported)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


def _app(db_url: str, fernet_key: str, client: Any, **config: Any) -> Any:
    from flask_app import create_app

    base = {"DATABASE_URL": db_url, "SESSION_ENCRYPTION_KEYS": fernet_key, "CRON_SECRET": "x"}
    return create_app(base | {"AIMHARDER_CLIENT": client} | config)


def overlapping_ticks(
    db_url: str, fernet_key: str, barrier: Any, ticks: int, out: str, stagger_ms: int
) -> None:
    """Run `ticks` ticks at once in this process, in step with the other processes."""
    from flask_app.core.dispatch import get_dispatcher
    from legacy_cron.scheduler import run_tick
    from tests.fakes import FakeBookingClient

    client = FakeBookingClient()
    app = _app(db_url, fernet_key, client, CRON_STAGGER_MS=stagger_ms)
    reports: list[dict[str, Any]] = []
    barrier.wait(timeout=60)  # every process is up: all ticks start together
    threads = [
        threading.Thread(target=lambda: reports.append(run_tick(app).to_json()))
        for _ in range(ticks)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert get_dispatcher(app).wait_idle(60), "armed prebookings never fired"
    booked = [call["class_id"] for call in client.calls]
    Path(out).write_text(json.dumps({"reports": reports, "booked": booked}))
    from flask_app import close

    close(app)


class HangingClient:
    """An AimHarder client that hangs forever inside book(), before the request leaves."""

    def __init__(self, entered: Any) -> None:
        self.entered = entered

    def book(self, **_: Any) -> Any:
        self.entered.set()
        time.sleep(3600)

    def check_booked(self, **_: Any) -> Any:
        raise AssertionError("a first claim has nothing to ask about")


def tick_that_dies(db_url: str, fernet_key: str, sandbox_url: str, hang_before_send: Any) -> None:
    """Run one tick with a 1 s lease; the parent kills this process while it books.

    hang_before_send: an Event to set when hanging before the request (None: the real client,
    with the sandbox told to hold its answer after booking).
    """
    from flask_app.aimharder.client import AimHarderClient
    from flask_app.core.dispatch import get_dispatcher
    from legacy_cron.scheduler import run_tick

    if hang_before_send is None:
        client: Any = AimHarderClient(sandbox_url, timeout=3600)
    else:
        client = HangingClient(hang_before_send)
    app = _app(db_url, fernet_key, client, CLAIM_LEASE_SECONDS=1, CRON_TICK_BUDGET_S=3600)
    run_tick(app)
    get_dispatcher(app).wait_idle(3600)  # the tick only armed it: stay while it books


def fifo_tick(db_url: str, fernet_key: str, sandbox_url: str, barrier: Any, leader: bool) -> None:
    """One tick on its own process, with the real client against the sandbox, in step with
    the other processes' ticks (cron-job.org pinging several workers at once)."""
    from flask_app.aimharder.client import AimHarderClient
    from flask_app.core.dispatch import get_dispatcher
    from legacy_cron.scheduler import run_tick

    client = AimHarderClient(sandbox_url)
    app = _app(db_url, fernet_key, client, DISPATCH_LEADER=leader)
    barrier.wait(timeout=60)
    run_tick(app)
    assert get_dispatcher(app).wait_idle(60), "armed prebookings never fired"
    client.close()
    from flask_app import close

    close(app)
