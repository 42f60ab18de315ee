"""The service's periodic jobs, as shim tasks on a beat schedule (synced to QStash schedules).

`flask --app wsgi tasks sync-schedules` turns BEAT_SCHEDULE into QStash schedules that call
`/api/qstash/tasks/<name>`; they keep running after the legacy cron path is retired.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from flask_app import paths
from flask_app.core import preflight
from flask_app.core.execution import get_executor
from flask_app.core.prebooking import PrebookingStatus
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash import dlq, relay
from flask_app.shim import shared_task
from flask_app.shim.flask import get_celery
from flask_app.shim.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Windows beyond QStash's maximum delay, and publishes that failed, get their message.
    "relay-prebookings": {"task": "prebooking.relay", "schedule": crontab(minute="*/5")},
    # Deliveries that died in QStash's DLQ: hand back to cron or mark failed, then clear them.
    "reconcile-dlq": {"task": "qstash.reconcile_dlq", "schedule": crontab(minute="*/15")},
    # Claims whose owner died mid-booking: the cron tick recovers them too, but not once
    # LEGACY_CRON_ENABLED is false; this keeps recovery alive in the QStash-only phase.
    "recover-stale-claims": {"task": "prebooking.recover_stale", "schedule": crontab()},
    # Before windows open: check stored sessions (PREFLIGHT_LEAD_S ahead) and probe the gym
    # clocks of the boxes opening soon (GYM_CLOCK_LEAD_S ahead). One schedule for both.
    "gym-preflight": {"task": "gym.preflight", "schedule": crontab()},
}
RECOVER_BATCH = 100


@shared_task(name="prebooking.relay", max_retries=0)
def relay_prebookings() -> dict[str, Any]:
    """Publish the pending prebookings QStash can now take (see relay.relay)."""
    with get_db().session() as session:
        return relay.relay(session, get_executor().clock.now()).to_json()


@shared_task(name="qstash.reconcile_dlq", max_retries=0)
def reconcile_dead_letters() -> dict[str, Any]:
    """Settle the prebookings whose deliveries died in the DLQ (see dlq.reconcile_dlq)."""
    with get_db().session() as session:
        return dlq.reconcile_dlq(session, get_executor().clock.now()).to_json()


@shared_task(name="prebooking.recover_stale", max_retries=0)
def recover_stale_claims() -> dict[str, int]:
    """Run every claim whose lease ran out back through the core (it asks AimHarder first)."""
    now = get_executor().clock.now()
    stale = (
        select(Prebooking.id)
        .where(Prebooking.status == PrebookingStatus.LOADED, Prebooking.claim_expires_at < now)
        .order_by(Prebooking.created_at, Prebooking.id)
        .limit(RECOVER_BATCH)
    )
    with get_db().session() as session:
        ids = list(session.scalars(stale))
    executor = get_executor()
    return dict(Counter(str(executor.attempt(pid, path=paths.QSTASH).action) for pid in ids))


@shared_task(name="gym.preflight", max_retries=0)
def gym_preflight() -> dict[str, Any]:
    """Check sessions and probe gym clocks ahead of windows (see core/preflight.py)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    now = get_executor().clock.now()
    sessions_checked = preflight.check_sessions(app, now).to_json()
    return {"sessions": sessions_checked, "clocks": preflight.probe_clocks(app, now)["probed"]}


def init_app(app: Flask) -> None:
    """Add the service's entries to the shim's beat schedule (after shim.init_app)."""
    schedule = get_celery(app).conf.beat_schedule
    for name, entry in BEAT_SCHEDULE.items():
        schedule.setdefault(name, dict(entry))
