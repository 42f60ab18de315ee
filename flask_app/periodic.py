"""The service's periodic jobs, as shim tasks on a beat schedule (synced to QStash schedules).

`flask --app wsgi tasks sync-schedules` turns BEAT_SCHEDULE into QStash schedules that call
`/api/qstash/tasks/<name>`; they keep running after the legacy cron path is retired.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_app import delivery
from flask_app.db import get_db
from flask_app.execution import get_executor
from flask_app.shim import shared_task
from flask_app.shim.flask import get_celery
from flask_app.shim.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Windows beyond QStash's maximum delay, and publishes that failed, get their message.
    "relay-prebookings": {"task": "prebooking.relay", "schedule": crontab(minute="*/5")},
    # Deliveries that died in QStash's DLQ: hand back to cron or mark failed, then clear them.
    "reconcile-dlq": {"task": "qstash.reconcile_dlq", "schedule": crontab(minute="*/15")},
}


@shared_task(name="prebooking.relay", max_retries=0)
def relay_prebookings() -> dict[str, Any]:
    """Publish the pending prebookings QStash can now take (see delivery.relay)."""
    with get_db().session() as session:
        return delivery.relay(session, get_executor().clock.now()).to_json()


@shared_task(name="qstash.reconcile_dlq", max_retries=0)
def reconcile_dead_letters() -> dict[str, Any]:
    """Settle the prebookings whose deliveries died in the DLQ (see delivery.reconcile_dlq)."""
    with get_db().session() as session:
        return delivery.reconcile_dlq(session, get_executor().clock.now()).to_json()


def init_app(app: Flask) -> None:
    """Add the service's entries to the shim's beat schedule (after shim.init_app)."""
    schedule = get_celery(app).conf.beat_schedule
    for name, entry in BEAT_SCHEDULE.items():
        schedule.setdefault(name, dict(entry))
