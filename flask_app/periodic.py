"""The service's periodic jobs, as shim tasks on a beat schedule (synced to QStash schedules).

The beat schedule becomes QStash schedules that call `/api/qstash/tasks/<name>`; they keep
running after the legacy cron path is retired. The app creates or updates them itself at
start (the background runner's `qstash-schedules` job: one process across every instance, by
a job lease; again at once when a deploy changes them), and every process checks them every
few minutes, so `/api/health` shows whether they exist without asking QStash per request; a
check that finds one missing creates it at once.
`flask --app wsgi tasks sync-schedules` still does the same by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from flask_app import background, paths
from flask_app.core.execution import get_executor
from flask_app.core.prebooking import PrebookingStatus
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash import dlq, relay
from flask_app.qstash.gateway import QStashError, get_gateway
from flask_app.qstash.publish import is_publishing
from flask_app.shim import beat, shared_task
from flask_app.shim.beat import DesiredSchedule, SyncPlan
from flask_app.shim.delivery import task_url
from flask_app.shim.flask import get_celery
from flask_app.shim.schedules import crontab

log = logging.getLogger(__name__)

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Windows beyond QStash's maximum delay, and publishes that failed, get their message.
    "relay-prebookings": {"task": "prebooking.relay", "schedule": crontab(minute="*/5")},
}
# Not on QStash schedules (each message counts against the plan: the free plan allows 1,000 a
# day, and these two cost 1,536): the DLQ is reconciled by the background runner's `qstash-dlq`
# job every minute (one process, by lease; qstash/dlq.py), and stale claims are re-armed by
# every process's sweep every 0.5 s (core/sweep.py). Their tasks stay for `.apply()` by hand;
# a deploy's schedule sync deletes the schedules an earlier version created.
RECOVER_BATCH = 100
SYNC_INTERVAL = timedelta(minutes=10)
CHECK_INTERVAL = timedelta(minutes=5)
_STATUS = "schedules"


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


# --- the schedules at start -----------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleStatus:
    """What this process last saw of the QStash schedules the beat schedule asks for."""

    checked_at: datetime
    entries: dict[str, str] = field(default_factory=dict)  # entry -> present|missing|outdated
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "all_present": self.error is None and set(self.entries.values()) <= {"present"},
            "entries": self.entries,
            "error": self.error,
        }


def _status_of(plan: SyncPlan, now: datetime) -> ScheduleStatus:
    entries = {s.entry: "missing" for s in plan.create}
    entries |= {s.entry: "outdated" for s in plan.update}
    entries |= {_entry(sid): "present" for sid in plan.unchanged}
    return ScheduleStatus(now, dict(sorted(entries.items())))


def _entry(schedule_id: str) -> str:
    return schedule_id.removeprefix("shim-")


def desired(app: Flask) -> list[DesiredSchedule]:
    """The QStash schedules the beat schedule asks for (as `flask tasks sync-schedules`)."""
    celery = get_celery(app)
    return beat.desired_schedules(
        celery.conf.beat_schedule,
        url_for_task=lambda name: task_url(app, name),
        timezone=celery.conf.get("timezone"),
        default_queue=celery.conf.task_default_queue,
    )


def sync(app: Flask, *, apply: bool) -> SyncPlan:
    """Compare QStash's schedules with the desired ones; with `apply`, make them match.

    Raises:
        QStashError: QStash could not be read or written.
    """
    gateway = get_gateway(app)
    plan = beat.plan_sync(desired(app), gateway.schedules())
    if apply:
        beat.apply_plan(plan, gateway)
    return plan


def fingerprint(app: Flask) -> str:
    """A short digest of the desired schedules: a deploy that changes them syncs at once."""
    wanted = [(s.schedule_id, s.destination, s.cron, s.body) for s in desired(app)]
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def _schedules(now: datetime, *, apply: bool) -> dict[str, Any]:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not is_publishing(app.config):
        return {"skipped": "QStash publishing is off"}
    try:
        plan = sync(app, apply=apply)
        if not apply and plan.create:
            _recreate_missing(app, plan)
    except QStashError as exc:
        log.warning("QStash schedules could not be %s: %s", "synced" if apply else "read", exc)
        app.extensions[_STATUS] = ScheduleStatus(now, error=str(exc))
        return {"error": str(exc)}
    # What was just written is present now: missing and outdated by a sync, missing by a check.
    written = {"missing", "outdated"} if apply else {"missing"}
    entries = _status_of(plan, now).entries
    status = ScheduleStatus(now, {e: "present" if v in written else v for e, v in entries.items()})
    app.extensions[_STATUS] = status
    return status.to_json()


def _recreate_missing(app: Flask, plan: SyncPlan) -> None:
    """Create the schedules the check found missing, at once and in whichever process saw it
    (idempotent: the same ids). The full sync (which also updates and deletes) stays with one
    process per interval, under its lease: after a restart that lease can be held for up to
    SYNC_INTERVAL by the process that died, and a QStash that lost its schedules (qstash_dev
    restarted, or someone deleted them) would go that long without a relay."""
    log.warning("QStash schedules missing, creating them: %s", [s.entry for s in plan.create])
    beat.apply_plan(SyncPlan(create=plan.create), get_gateway(app))


def sync_schedules_job(now: datetime) -> dict[str, Any]:
    """Create or update the QStash schedules (the runner runs it in one process at a time)."""
    return _schedules(now, apply=True)


def check_schedules_job(now: datetime) -> dict[str, Any]:
    """Read the QStash schedules, create the missing ones, and note what there is (each
    process, for /api/health)."""
    return _schedules(now, apply=False)


def schedule_status(app: Flask) -> dict[str, Any] | None:
    """This process's last view of the schedules (None before the first check)."""
    found: ScheduleStatus | None = app.extensions.get(_STATUS)
    return found.to_json() if found else None


def init_app(app: Flask) -> None:
    """Add the service's entries to the shim's beat schedule (after shim.init_app), and the
    schedule jobs to the background runner."""
    schedule = get_celery(app).conf.beat_schedule
    for name, entry in BEAT_SCHEDULE.items():
        schedule.setdefault(name, dict(entry))
    runner = background.get_runner(app)
    runner.register(
        "qstash-schedules",
        SYNC_INTERVAL,
        sync_schedules_job,
        lease=True,
        version=lambda: fingerprint(app),
    )
    runner.register("qstash-schedules-check", CHECK_INTERVAL, check_schedules_job)
