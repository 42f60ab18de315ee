"""The legacy cron tick: pick the due prebookings (pure), then arm them with the dispatcher.

A tick claims nothing itself. Each candidate is armed with the process's dispatcher
(`flask_app.core.dispatch`, path "cron"), whose one conditional UPDATE is the claim, so
overlapping ticks (a slow tick and the next minute's, several app workers, a manual run from
cron-job.org's console) cannot book a prebooking twice; the tick answers as soon as its
candidates are armed (cron-job.org gives up after 30 s). The dispatcher fires each class in
FIFO order, first asked first fired, `CRON_STAGGER_MS` apart, at instants derived from each
prebooking's rank in its class and an anchor shared by every process: overlapping ticks on
several workers keep the order. Candidates not armed within the budget stay pending.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from flask import Flask
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app.core.dispatch import ArmResult, Arrival, Dispatcher, get_dispatcher
from flask_app.core.prebooking import Event, PrebookingStatus, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash import publish, relay

log = logging.getLogger(__name__)

PATH = "cron"
CLAIMABLE = sources(Event.CLAIM)


class TickUnavailable(Exception):
    """The tick could not run at all (e.g. the database is unreachable)."""


class DueRow(Protocol):
    """What due_prebookings() reads from a row."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def available_at(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def claim_expires_at(self) -> datetime | None: ...


R = TypeVar("R", bound=DueRow)


@dataclass(frozen=True)
class Candidate:
    """The columns of a prebooking a tick needs to choose and order it."""

    id: str
    status: str
    available_at: datetime
    created_at: datetime
    claim_expires_at: datetime | None


def is_due(row: DueRow, now: datetime) -> bool:
    """Pending with its window open, or claimed by an owner whose lease ran out (recoverable)."""
    if row.status in CLAIMABLE:  # pending, or session_expired (still tried at the instant)
        return row.available_at <= now
    if row.status == PrebookingStatus.LOADED:
        return row.claim_expires_at is not None and row.claim_expires_at < now
    return False


def due_prebookings(rows: Iterable[R], now: datetime, limit: int) -> list[R]:
    """The due rows, oldest request first (created_at, then id), at most `limit`."""
    due = [row for row in rows if is_due(row, now)]
    return sorted(due, key=lambda row: (row.created_at, row.id))[:limit]


@dataclass(frozen=True)
class TickSettings:
    """How a tick paces itself (CRON_* config)."""

    budget: timedelta = timedelta(seconds=20)  # stop arming after this (cron-job.org: 30 s)
    limit: int = 50

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TickSettings:
        """Read CRON_TICK_BUDGET_S and CRON_BATCH_LIMIT (CRON_STAGGER_MS: see init_app)."""
        return cls(
            budget=timedelta(seconds=float(config["CRON_TICK_BUDGET_S"])),
            limit=int(config["CRON_BATCH_LIMIT"]),
        )


@dataclass
class TickReport:
    """What one tick did; to_json() is the endpoint's (tiny) response body."""

    tick_id: str
    due: int = 0
    claimed: int = 0  # armed: the dispatcher fires them at their instants
    recovered: int = 0  # of which were claims whose owner died (their lease ran out)
    lost_claim: int = 0
    deferred: int = 0  # left pending: the budget ran out, or the dispatcher was full
    errors: int = 0
    relayed: int = 0
    duration_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        """The response body: counts only, never per-prebooking details."""
        counts = ("due", "claimed", "recovered", "lost_claim", "deferred", "errors", "relayed")
        return (
            {"ran": True}
            | {name: getattr(self, name) for name in counts}
            | {
                "duration_ms": self.duration_ms,
                "tick_id": self.tick_id,
            }
        )


def count(report: TickReport, candidate: Candidate, admitted: ArmResult) -> None:
    """Count what arming one candidate did."""
    if admitted is ArmResult.ARMED:
        report.claimed += 1
        report.recovered += candidate.status == PrebookingStatus.LOADED
    elif admitted is ArmResult.FULL:
        report.deferred += 1
    else:  # claimed, finished or cancelled meanwhile by another tick or path
        report.lost_claim += 1


def select_due(session: Session, now: datetime, limit: int) -> list[Candidate]:
    """Read the due candidates (the SQL narrows, due_prebookings() decides)."""
    recoverable = and_(
        Prebooking.status == PrebookingStatus.LOADED, Prebooking.claim_expires_at < now
    )
    open_window = and_(Prebooking.status.in_(CLAIMABLE), Prebooking.available_at <= now)
    stmt = (
        select(
            Prebooking.id,
            Prebooking.status,
            Prebooking.available_at,
            Prebooking.created_at,
            Prebooking.claim_expires_at,
        )
        .where(or_(open_window, recoverable))
        .order_by(Prebooking.created_at, Prebooking.id)
        .limit(limit)
    )
    rows = [Candidate(*row) for row in session.execute(stmt)]
    return due_prebookings(rows, now, limit)


def run_tick(app: Flask, *, now: datetime | None = None) -> TickReport:
    """Arm what is due now (oldest request first, within the budget); report what happened.

    Raises:
        TickUnavailable: the due prebookings could not be read.
    """
    settings = TickSettings.from_config(app.config)
    dispatcher = get_dispatcher(app)
    started_at = now or dispatcher.clock.now()
    started = time.monotonic()
    report = TickReport(tick_id=uuid.uuid4().hex[:12])
    try:
        with get_db(app).session() as session:
            candidates = select_due(session, started_at, settings.limit)
    except SQLAlchemyError as exc:
        raise TickUnavailable("could not read due prebookings from the database") from exc
    report.due = len(candidates)
    deadline = started + settings.budget.total_seconds()
    for i, candidate in enumerate(candidates):
        if i > 0 and time.monotonic() > deadline:  # the oldest always goes: slow, not stopped
            report.deferred += len(candidates) - i
            break
        _arm(dispatcher, report, candidate, started_at)
    report.relayed = relay_to_qstash(app, started_at)
    report.duration_ms = round((time.monotonic() - started) * 1000)
    log.info("cron tick %s: %s", report.tick_id, report.to_json())
    return report


def _arm(dispatcher: Dispatcher, report: TickReport, candidate: Candidate, now: datetime) -> None:
    arrival = Arrival(PATH, now)
    try:
        admitted = dispatcher.arm(candidate.id, arrival, opening=candidate.available_at)
    except SQLAlchemyError:  # one bad claim must not sink the tick; the next tick retries
        log.warning("cron tick: arming %s failed", candidate.id, exc_info=True)
        report.errors += 1
        return
    count(report, candidate, admitted.result)
    if admitted.result is ArmResult.LOST:
        dispatcher.note_lost(candidate.id, arrival)


def relay_to_qstash(app: Flask, now: datetime) -> int:
    """Hand QStash the pending prebookings that came within its reach (while cron still ticks).

    The relay also runs as a QStash schedule (flask_app.periodic); here it is a free extra.
    Its failures never fail the tick.
    """
    if not publish.is_publishing(app.config):
        return 0
    try:
        with app.app_context(), get_db(app).session() as session:
            return relay.relay(session, now).published
    except Exception:
        log.warning("relay from the cron tick failed", exc_info=True)
        return 0
