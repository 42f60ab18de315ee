"""Processes that arm prebookings with their own dispatcher (spawned by the multi-process
dispatcher tests, never imported by the app)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def arm_and_fire(
    db_url: str,
    fernet_key: str,
    sandbox_url: str,
    ids: list[str],
    armed: Any,
    lead_ms: float,
) -> None:
    """Arm `ids` in this process (real client, real clock), tell the parent, fire, exit."""
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
    arrival = Arrival("qstash", datetime.now(UTC))
    results = {dispatcher.arm(pid, arrival).result for pid in ids}
    assert results <= {ArmResult.ARMED}, results
    armed.set()
    assert dispatcher.wait_idle(60), "armed prebookings never settled"
    client.close()
    close(app)
