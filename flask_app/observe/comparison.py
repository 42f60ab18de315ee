"""Record every arrival of every path, and load what parity.compare() needs from the database.

The execution core announces each arrival on `events.attempt_finished`; the receiver here
writes one `arrivals` row in its own session, updates the Prometheus metrics and logs one
structured line. Nothing in the views knows about it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app.core import events
from flask_app.core.execution import Action, Attempt
from flask_app.db import get_db
from flask_app.models import Arrival, Prebooking
from flask_app.observe import metrics, parity
from flask_app.timing import SystemClock

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Connect the arrival recorder (once per process; it finds the app when it runs)."""
    metrics.init_app(app)
    # A module-level function: blinker holds receivers weakly, and connecting twice is a no-op.
    events.attempt_finished.connect(on_attempt_finished)


def on_attempt_finished(
    sender: str, *, attempt: Attempt, app: Flask | None = None, **_: Any
) -> None:
    """Log, count and store one arrival; never raises into the execution core."""
    log.info("arrival %s", format_log_line(attempt))
    app = metrics.owning_app(app)
    if app is None:
        log.warning("arrival of %s not recorded: no app", attempt.prebooking_id)
        return
    found = metrics.get_metrics(app)
    if found is not None:
        found.record_arrival(attempt)
    if attempt.action is Action.NOT_FOUND or attempt.available_at is None:
        return  # no such prebooking: the row's foreign key could not hold it (logged, counted)
    try:
        with get_db(app).session() as session:
            session.add(to_row(attempt))
            session.commit()
    except SQLAlchemyError:
        log.exception("arrival of %s could not be stored", attempt.prebooking_id)


def to_row(attempt: Attempt) -> Arrival:
    """The `arrivals` row of one attempt."""
    assert attempt.available_at is not None and attempt.lateness_ms is not None
    latency = attempt.booking_latency
    return Arrival(
        prebooking_id=attempt.prebooking_id,
        path=attempt.path,
        arrived_at=attempt.arrived_at,
        available_at=attempt.available_at,
        lateness_ms=attempt.lateness_ms,
        won=attempt.won,
        action=str(attempt.action),
        outcome=attempt.outcome.value if attempt.outcome else None,
        fired_at=attempt.fired_at,
        fire_lateness_ms=attempt.fire_lateness_ms,
        booking_latency_ms=latency / timedelta(milliseconds=1) if latency is not None else None,
        message_id=attempt.message_id,
        retried=attempt.retried,
        detail=_jsonable(attempt.detail) or None,
    )


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v if _is_json(v) else str(v) for k, v in detail.items()}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def format_log_line(attempt: Attempt) -> str:
    """One key=value line: prebooking id, path, lateness, winner, and what happened."""
    fields: dict[str, Any] = {
        "prebooking_id": attempt.prebooking_id,
        "path": attempt.path,
        "lateness_ms": _num(attempt.lateness_ms),
        "won": str(attempt.won).lower(),
        "action": str(attempt.action),
        "outcome": attempt.outcome.value if attempt.outcome else None,
        "fire_lateness_ms": _num(attempt.fire_lateness_ms),
        "booking_latency_ms": _num(
            attempt.booking_latency / timedelta(milliseconds=1)
            if attempt.booking_latency is not None
            else None
        ),
        "message_id": attempt.message_id,
        "retried": attempt.retried,
    }
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items())


def _num(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


# ------------------------------------------------------------------------------ reading back


def load_arrivals(session: Session, since: datetime, now: datetime) -> list[parity.ArrivalRecord]:
    """Stored arrivals in [since, now], oldest first."""
    rows = session.scalars(
        select(Arrival)
        .where(Arrival.arrived_at >= since, Arrival.arrived_at <= now)
        .order_by(Arrival.arrived_at, Arrival.id)
    )
    return [
        parity.ArrivalRecord(
            prebooking_id=r.prebooking_id,
            path=r.path,
            arrived_at=r.arrived_at,
            available_at=r.available_at,
            lateness_ms=r.lateness_ms,
            won=r.won,
            action=r.action,
            outcome=r.outcome,
            fired_at=r.fired_at,
            fire_lateness_ms=r.fire_lateness_ms,
            booking_latency_ms=r.booking_latency_ms,
            message_id=r.message_id,
            retried=r.retried,
        )
        for r in rows
    ]


def load_prebookings(
    session: Session, since: datetime, now: datetime, extra_ids: set[str]
) -> list[parity.PrebookingInfo]:
    """Prebookings due in [since, now], plus those the window's arrivals refer to."""
    due = (Prebooking.available_at >= since) & (Prebooking.available_at <= now)
    unique = {r.id: r for r in session.scalars(select(Prebooking).where(due))}
    rest = sorted(extra_ids - unique.keys())
    for start in range(0, len(rest), 500):  # keep IN lists small
        chunk = rest[start : start + 500]
        unique.update(
            (r.id, r) for r in session.scalars(select(Prebooking).where(Prebooking.id.in_(chunk)))
        )
    return [
        parity.PrebookingInfo(
            id=r.id,
            available_at=r.available_at,
            status=r.status,
            executed_by=r.executed_by,
            qstash_message_id=r.qstash_message_id,
            error_message=r.error_message,
        )
        for r in unique.values()
    ]


def build_report(
    session: Session,
    now: datetime,
    since: datetime,
    thresholds: parity.Thresholds | None = None,
) -> parity.ParityReport:
    """Load the window's arrivals and prebookings and compare the paths."""
    arrivals = load_arrivals(session, since, now)
    infos = load_prebookings(session, since, now, {a.prebooking_id for a in arrivals})
    return parity.compare(arrivals, infos, now, since, thresholds)


def current_report(since_text: str) -> parity.ParityReport:
    """The current app's report over `since_text` (a duration or an ISO-8601 instant).

    Raises:
        parity.SinceError: `since_text` is not understood, or reaches back further than
            the arrivals are kept (ARRIVALS_RETENTION_DAYS).
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    now = (app.config.get("CLOCK") or SystemClock()).now()
    since = parity.parse_since(since_text, now)
    days = int(app.config.get("ARRIVALS_RETENTION_DAYS") or 90)
    if now - since > timedelta(days=days):  # older arrivals are deleted: the report would lie
        raise parity.SinceError(
            f"since reaches back more than the {days} days arrivals are kept "
            f"(ARRIVALS_RETENTION_DAYS): {since_text!r}"
        )
    with get_db(app).session() as session:
        return build_report(session, now, since, app.config.get("PARITY_THRESHOLDS"))


def prune_arrivals(session: Session, before: datetime) -> int:
    """Delete the arrivals recorded before `before` (the retention); returns how many."""
    deleted = session.execute(delete(Arrival).where(Arrival.arrived_at < before)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return int(deleted or 0)
