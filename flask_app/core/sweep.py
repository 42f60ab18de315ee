"""The sweep: the executor of last resort, on every process's background runner.

Every `DISPATCH_SWEEP_INTERVAL_S` (default 0.5 s), one indexed query reads the prebookings
opening within `DISPATCH_SWEEP_HORIZON_S` that are still pending, and the claims whose owner
died; `why_swept` (pure) picks those QStash has not covered, and the process arms them with its
dispatcher under the path "fallback", so they fire at their class's instant like any other:

- never published: no message id because publishing failed (`qstash_error`: QStash down, the
  outbox still retrying), or no message at all while cron is off;
- overdue: published, yet still pending `DISPATCH_OVERDUE_MS` before the opening (a delivery
  due a few seconds ahead should have arrived);
- released for a retry: the window is open and an earlier claim ended without an outcome (the
  dispatcher's re-sends ran out on transient failures);
- stale: claimed by a process that died (its lease ran out).

Each is bounded by its claim count: after `DISPATCH_MAX_CLAIMS` claims without an outcome the
prebooking fails with the reason. Active only while the QStash path executes (`QSTASH_ENABLED`,
not shadow); with cron on, prebookings outside the QStash rollout stay cron's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import Flask
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from flask_app import background, paths
from flask_app.core.dispatch import ArmResult, Arrival, Dispatcher, get_dispatcher
from flask_app.core.execution import give_up
from flask_app.core.fire_groups import forget_groups, forget_processes
from flask_app.core.prebooking import Event, PrebookingStatus, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash.planning import is_in_rollout

#: The sweep's arrivals are recorded under this path (registered by init_app).
FALLBACK_PATH = paths.DeliveryPath(
    "fallback",
    "the dispatcher's sweep: prebookings QStash did not cover (never published, overdue, "
    "released for a retry, stale claims), armed at their instant by the app itself",
    paths.Recording.EXECUTE,
    color="#2f855a",
)
FALLBACK = FALLBACK_PATH.name

#: Prebookings read per pass (oldest opening first); the next pass takes the rest.
BATCH = 200
#: Group rows older than this are deleted by the sweep (they only settled a past round).
GROUPS_KEPT = timedelta(hours=1)


class Why(StrEnum):
    """Why the sweep takes a prebooking."""

    STALE = "stale_claim"
    RETRY = "released"
    PUBLISH_FAILED = "publish_failed"
    UNPUBLISHED = "unpublished"
    OVERDUE = "overdue"


@dataclass(frozen=True)
class SweepSettings:
    """DISPATCH_SWEEP_* settings, and what decides whose a prebooking is."""

    interval: timedelta = timedelta(seconds=0.5)
    horizon: timedelta = timedelta(seconds=5)
    overdue: timedelta = timedelta(milliseconds=1500)
    max_claims: int = 3
    cron_on: bool = False
    rollout_percent: int = 100

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SweepSettings:
        return cls(
            interval=timedelta(seconds=float(config["DISPATCH_SWEEP_INTERVAL_S"])),
            horizon=timedelta(seconds=float(config["DISPATCH_SWEEP_HORIZON_S"])),
            overdue=overdue_after(config),
            max_claims=int(config["DISPATCH_MAX_CLAIMS"]),
            cron_on=paths.has_polling_path(config),
            rollout_percent=int(config["QSTASH_ROLLOUT_PERCENT"]),
        )


@dataclass(frozen=True)
class Candidate:
    """The columns the sweep reads of a prebooking."""

    id: str
    status: str
    user_email: str
    available_at: datetime
    claim_expires_at: datetime | None
    claim_count: int
    qstash_message_id: str | None
    qstash_error: str | None
    error_message: str | None


#: QStash delivers a message within about this long after its due time (whole seconds).
QSTASH_JITTER = timedelta(seconds=1)


def overdue_after(config: Mapping[str, Any]) -> timedelta:
    """How long before its opening a published prebooking still pending counts as overdue:
    DISPATCH_OVERDUE_MS, but never before its delivery could still arrive on time (due
    QSTASH_LEAD_SECONDS ahead, up to QSTASH_JITTER late)."""
    configured = timedelta(milliseconds=float(config["DISPATCH_OVERDUE_MS"]))
    latest = timedelta(seconds=float(config["QSTASH_LEAD_SECONDS"])) - QSTASH_JITTER
    return max(timedelta(0), min(configured, latest))


def why_swept(row: Candidate, now: datetime, settings: SweepSettings) -> Why | None:
    """Why the sweep should take this prebooking now (None: someone else covers it)."""
    if row.status == PrebookingStatus.LOADED:
        expired = row.claim_expires_at is not None and row.claim_expires_at < now
        return Why.STALE if expired else None
    if settings.cron_on and not is_in_rollout(row.user_email, settings.rollout_percent):
        return None  # cron's
    if row.available_at <= now and row.claim_count > 0:
        return Why.RETRY
    if row.qstash_message_id is None:
        if row.qstash_error:
            return Why.PUBLISH_FAILED
        return None if settings.cron_on else Why.UNPUBLISHED
    return Why.OVERDUE if row.available_at - now <= settings.overdue else None


def candidates(session: Session, now: datetime, horizon: timedelta) -> list[Candidate]:
    """Pending prebookings opening within the horizon, and claims whose lease ran out."""
    stmt = (
        select(
            Prebooking.id,
            Prebooking.status,
            Prebooking.user_email,
            Prebooking.available_at,
            Prebooking.claim_expires_at,
            Prebooking.claim_count,
            Prebooking.qstash_message_id,
            Prebooking.qstash_error,
            Prebooking.error_message,
        )
        .where(
            or_(
                and_(
                    Prebooking.status.in_(sources(Event.CLAIM)),
                    Prebooking.available_at <= now + horizon,
                ),
                and_(
                    Prebooking.status == PrebookingStatus.LOADED,
                    Prebooking.claim_expires_at < now,
                ),
            )
        )
        .order_by(Prebooking.available_at, Prebooking.created_at, Prebooking.id)
        .limit(BATCH)
    )
    return [Candidate(*row) for row in session.execute(stmt)]


def sweep(app: Flask, now: datetime) -> dict[str, int]:
    """One pass: arm (or give up on) what QStash has not covered; counts by what was done."""
    config = app.config
    if not config["QSTASH_ENABLED"] or config["QSTASH_SHADOW"]:
        return {}
    settings = SweepSettings.from_config(config)
    dispatcher = get_dispatcher(app)
    done: Counter[str] = Counter()
    with get_db(app).session() as session:
        found = candidates(session, now, settings.horizon)
        for row in found:
            why = why_swept(row, now, settings)
            if why is not None:
                done[_take(session, dispatcher, row, why, now, settings)] += 1
        forget_groups(session, now - GROUPS_KEPT)
        forget_processes(session, now - GROUPS_KEPT)
    for what, count in done.items():
        dispatcher.telemetry.swept(what, count)
    return dict(done)


def _take(
    session: Session,
    dispatcher: Dispatcher,
    row: Candidate,
    why: Why,
    now: datetime,
    settings: SweepSettings,
) -> str:
    if row.claim_count >= settings.max_claims:
        last = row.error_message or "no outcome recorded"
        reason = f"gave up after {row.claim_count} claims without an outcome; last: {last}"
        return "failed" if give_up(session, row.id, reason, now) else "lost_claim"
    admitted = dispatcher.arm(row.id, Arrival(FALLBACK, now), opening=row.available_at)
    if admitted.result is ArmResult.ARMED:
        return str(why)
    return str(admitted.result)


def init_app(app: Flask) -> None:
    """Register the fallback path, and the sweep on the app's background runner (after
    dispatch and background)."""
    paths.register(FALLBACK_PATH)
    interval = timedelta(seconds=float(app.config["DISPATCH_SWEEP_INTERVAL_S"]))
    background.get_runner(app).register("dispatch-sweep", interval, lambda now: sweep(app, now))
