"""The legacy cron tick: pick the due prebookings (pure), then book them through the core.

A tick claims nothing itself. Each candidate goes to `Executor.attempt(path="cron")`, whose
one conditional UPDATE is the claim, so overlapping ticks (a slow tick and the next minute's,
several app workers, a manual run from cron-job.org's console) cannot book a prebooking twice.
Candidate i fires at `started_at + i × stagger` (first asked, first fired, as the original did);
candidates whose booking could not finish inside the budget stay pending for the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from flask import Flask
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app.core.execution import Action, Attempt, get_executor
from flask_app.core.prebooking import Event, PrebookingStatus, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash import publish, relay

log = logging.getLogger(__name__)

PATH = "cron"
CLAIMABLE = sources(Event.CLAIM)
# A launch starts this long before its fire_at, so its claim is done when the instant comes.
CLAIM_LEAD_S = 0.025


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
    """How a tick paces itself (CRON_* config, plus the AimHarder timeout as the reserve)."""

    budget: timedelta = timedelta(seconds=20)
    stagger: timedelta = timedelta(milliseconds=50)
    limit: int = 50
    reserve: timedelta = timedelta(seconds=8)  # the longest one booking request may take

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TickSettings:
        """Read CRON_TICK_BUDGET_S, CRON_STAGGER_MS, CRON_BATCH_LIMIT, AIMHARDER_TIMEOUT_S."""
        return cls(
            budget=timedelta(seconds=float(config["CRON_TICK_BUDGET_S"])),
            stagger=timedelta(milliseconds=float(config["CRON_STAGGER_MS"])),
            limit=int(config["CRON_BATCH_LIMIT"]),
            reserve=timedelta(seconds=float(config["AIMHARDER_TIMEOUT_S"])),
        )


@dataclass(frozen=True)
class Launch:
    """One candidate and the instant its booking request may leave."""

    candidate: Candidate
    fire_at: datetime


@dataclass(frozen=True)
class TickPlan:
    """What a tick launches now and what it leaves pending for the next tick."""

    launches: list[Launch]
    deferred: list[Candidate]


def plan_tick(
    candidates: Sequence[Candidate], started_at: datetime, settings: TickSettings
) -> TickPlan:
    """Stagger the candidates in order; defer those whose booking could outlast the budget.

    The first candidate is always launched, so a budget shorter than one booking's reserve
    slows the legacy path down instead of stopping it.
    """
    launches: list[Launch] = []
    for i, candidate in enumerate(candidates):
        offset = settings.stagger * i
        if i > 0 and offset + settings.reserve > settings.budget:
            return TickPlan(launches, list(candidates[i:]))
        launches.append(Launch(candidate, started_at + offset))
    return TickPlan(launches, [])


@dataclass
class TickReport:
    """What one tick did; to_json() is the endpoint's (tiny) response body."""

    tick_id: str
    due: int = 0
    claimed: int = 0
    recovered: int = 0
    booked: int = 0
    failed: int = 0
    lost_claim: int = 0
    released: int = 0
    deferred: int = 0
    errors: int = 0
    running: int = 0
    relayed: int = 0
    duration_ms: int = 0
    attempts: list[Attempt] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The response body: counts only, never per-prebooking details."""
        counts = ("due", "claimed", "recovered", "booked", "failed", "lost_claim", "released")
        more = ("deferred", "errors", "running", "relayed", "duration_ms", "tick_id")
        return {"ran": True} | {name: getattr(self, name) for name in counts + more}


def tally(report: TickReport, launches: Sequence[Launch], results: Sequence[object]) -> None:
    """Count each launch's result (an Attempt, an exception, or None if still running)."""
    for launch, outcome in zip(launches, results, strict=True):
        if outcome is None:
            report.running += 1
        elif not isinstance(outcome, Attempt):
            report.errors += 1
        else:
            report.attempts.append(outcome)
            _count_attempt(report, launch, outcome)


def _count_attempt(report: TickReport, launch: Launch, attempt: Attempt) -> None:
    report.claimed += attempt.won
    report.recovered += attempt.won and launch.candidate.status == PrebookingStatus.LOADED
    if attempt.action is Action.CONFIRMED:
        report.booked += 1
    elif attempt.action is Action.EXECUTED:
        success = attempt.outcome is not None and attempt.outcome.is_success
        report.booked += success
        report.failed += not success
    elif attempt.action is Action.FAILED:
        report.failed += 1
    elif attempt.action is Action.RELEASED:
        report.released += 1
    else:  # lost_claim, skipped (cancelled meanwhile), not_found (deleted meanwhile)
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
    """Book what is due now, staggered and within the budget; report what happened.

    Raises:
        TickUnavailable: the due prebookings could not be read.
    """
    settings = TickSettings.from_config(app.config)
    executor = get_executor(app)
    started_at = now or executor.clock.now()
    started = time.monotonic()
    report = TickReport(tick_id=uuid.uuid4().hex[:12])
    try:
        with get_db(app).session() as session:
            candidates = select_due(session, started_at, settings.limit)
    except SQLAlchemyError as exc:
        raise TickUnavailable("could not read due prebookings from the database") from exc
    plan = plan_tick(candidates, started_at, settings)
    report.due, report.deferred = len(candidates), len(plan.deferred)
    results = _run_launches(app, plan.launches, started_at, started + _s(settings.budget))
    tally(report, plan.launches, results)
    report.relayed = relay_to_qstash(app, started_at)
    report.duration_ms = round((time.monotonic() - started) * 1000)
    log.info("cron tick %s: %s", report.tick_id, report.to_json())
    return report


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


def _run_launches(
    app: Flask,
    launches: Sequence[Launch],
    arrived_at: datetime,
    deadline: float,
) -> list[object]:
    # One thread per launch, started just before its fire_at: it claims, then the core waits
    # for fire_at. Claiming late keeps few DB connections busy at once, and leaves what a dying
    # tick never reached pending instead of claimed until the lease runs out.
    results: list[object] = [None] * len(launches)

    def run(i: int, launch: Launch) -> None:
        try:
            with app.app_context():
                results[i] = get_executor(app).attempt(
                    launch.candidate.id, path=PATH, arrived_at=arrived_at, fire_at=launch.fire_at
                )
        except Exception as exc:  # one bad prebooking must not sink the tick
            log.warning("cron attempt %s raised", launch.candidate.id, exc_info=True)
            results[i] = exc

    threads = []
    paced_from = time.monotonic()
    for i, launch in enumerate(launches):
        lead = _s(launch.fire_at - arrived_at) - CLAIM_LEAD_S
        time.sleep(max(0.0, paced_from + lead - time.monotonic()))
        thread = threading.Thread(target=run, args=(i, launch), name=f"cron-{i}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return list(results)


def _s(delta: timedelta) -> float:
    return delta.total_seconds()
