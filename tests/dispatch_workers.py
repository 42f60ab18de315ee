"""Processes that arm prebookings with their own dispatcher (spawned by the multi-process
dispatcher tests, never imported by the app)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def arm_and_fire(
    db_url: str,
    fernet_key: str,
    sandbox_url: str,
    lead_ms: float,
    ready: Any,
    ids_queue: Any,
    armed: Any,
) -> None:
    """Start an app (real client, real clock), tell the parent it is up, take the ids to arm
    from `ids_queue`, arm them in this process, tell the parent, fire, exit.

    The parent creates the prebookings only once every process is up: starting a Python
    process with the app takes seconds on a loaded machine, and the class's instant is meant
    to be seconds after the prebookings are armed, not after the slowest process started."""
    from flask_app import close, create_app
    from flask_app.aimharder.client import AimHarderClient
    from flask_app.core.dispatch import ArmResult, Arrival, get_dispatcher

    client = AimHarderClient(sandbox_url)
    app = create_app(
        {
            "DATABASE_URL": db_url,
            "SESSION_ENCRYPTION_KEYS": fernet_key,
            "AIMHARDER_CLIENT": client,
            "DISPATCH_LEAD_MS": lead_ms,
        }
    )
    dispatcher = get_dispatcher(app)
    ready.set()
    ids: list[str] = ids_queue.get(timeout=120)
    arrival = Arrival("qstash", datetime.now(UTC))
    results = {dispatcher.arm(pid, arrival).result for pid in ids}
    assert results <= {ArmResult.ARMED}, results
    armed.set()
    assert dispatcher.wait_idle(60), "armed prebookings never settled"
    client.close()
    close(app)
