"""Publishing to QStash: the publish policy, and one delayed message per prebooking.

A prebooking gets one delayed message, due `QSTASH_LEAD_SECONDS` before its window opens (a
crowd opening at the same instant is spread by its FIFO rank: `crowd_ranks`). The create and
cancel go through the outbox (outbox.py); the relay and the backfill publish with these too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flask_app.core.prebooking import PrebookingStatus
from flask_app.models import Prebooking
from flask_app.observe import metrics
from flask_app.qstash.gateway import Gateway, Message, QStashError, QStashUnavailable
from flask_app.qstash.planning import PublishPolicy, Skip, plan_row

log = logging.getLogger(__name__)


@dataclass
class RelayReport:
    """What one publish (or relay) run did."""

    published: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    unavailable: bool = False  # QStash could not be reached (or timed out): stop for now

    def to_json(self) -> dict[str, Any]:
        return {"published": self.published, "skipped": dict(self.skipped), "errors": self.errors}


# --- configuration --------------------------------------------------------------------------


def policy_from(config: Mapping[str, Any]) -> PublishPolicy:
    """The publish policy the app's config describes."""
    return PublishPolicy(
        app_base_url=config["APP_BASE_URL"],
        lead=timedelta(seconds=float(config["QSTASH_LEAD_SECONDS"])),
        max_delay=config["QSTASH_MAX_DELAY"],
        crowd_lead=timedelta(milliseconds=float(config["QSTASH_CROWD_LEAD_MS"])),
        max_lead=timedelta(seconds=float(config["QSTASH_MAX_LEAD_SECONDS"])),
    )


def is_publishing(config: Mapping[str, Any]) -> bool:
    """True when new prebookings get a message (executing, or shadowing the deliveries)."""
    return bool(config["QSTASH_ENABLED"] or config["QSTASH_SHADOW"])


# --- publishing -----------------------------------------------------------------------------


def plan_for(
    row: Prebooking, now: datetime, config: Mapping[str, Any], crowd_rank: int = 0
) -> Message | Skip:
    """The message for a pending prebooking, or why it gets none now."""
    rollout = int(config["QSTASH_ROLLOUT_PERCENT"])
    policy = policy_from(config)
    return plan_row(row, now=now, policy=policy, rollout_percent=rollout, crowd_rank=crowd_rank)


def twins_of(instants: Iterable[datetime]) -> Any:
    """The WHERE clauses selecting every prebooking opening at one of `instants` (its twins)."""
    # Naming every status lets the (status, available_at) index serve the lookup; every status
    # counts, so a twin's rank never changes while the others fire.
    return (
        Prebooking.status.in_(list(PrebookingStatus)),
        Prebooking.available_at.in_(list(instants)),
    )


def crowd_ranks(session: Session, rows: Iterable[tuple[str, datetime]]) -> dict[str, int]:
    """For each (id, available_at): how many prebookings opening at that instant were created
    before it, by (created_at, id): its FIFO rank, which spreads its delivery (lead_for).

    One statement for the whole batch; ids not in the database are left out.
    """
    wanted = dict(rows)
    if not wanted:
        return {}
    order = (Prebooking.created_at, Prebooking.id)
    rank = func.row_number().over(partition_by=Prebooking.available_at, order_by=order) - 1
    ranked = (
        select(Prebooking.id.label("id"), rank.label("rank"))
        .where(*twins_of(set(wanted.values())))
        .subquery()
    )
    found = session.execute(select(ranked.c.id, ranked.c.rank).where(ranked.c.id.in_(wanted)))
    return {row.id: int(row.rank) for row in found}


def plan_rows(
    session: Session, rows: Sequence[Prebooking], now: datetime, config: Mapping[str, Any]
) -> tuple[list[tuple[Prebooking, Message]], list[tuple[Prebooking, Skip]]]:
    """Each row's message, or why it gets none now (crowd ranks taken in one query)."""
    planned: list[tuple[Prebooking, Message]] = []
    skipped: list[tuple[Prebooking, Skip]] = []
    ranks = crowd_ranks(session, ((row.id, row.available_at) for row in rows))
    for row in rows:
        plan = plan_for(row, now, config, ranks.get(row.id, 0))
        if isinstance(plan, Skip):
            skipped.append((row, plan))
        else:
            planned.append((row, plan))
    return planned, skipped


def send(planned: Sequence[tuple[Prebooking, Message]], gateway: Gateway) -> QStashError | None:
    """Publish the planned messages in one batch; store each id, or the error on every row.

    Returns the error (None on success); never raises for QStash trouble.
    """
    if not planned:
        return None
    try:
        answers = gateway.batch([msg for _, msg in planned])
    except QStashError as exc:
        log.warning("publishing %d prebooking(s) to QStash failed: %s", len(planned), exc)
        kind = "unavailable" if isinstance(exc, QStashUnavailable) else "rejected"
        metrics.publish_error(kind)
        for row, _ in planned:
            row.qstash_error = f"publish: {exc}"[:2000]
        return exc
    for (row, _), answer in zip(planned, answers, strict=True):
        row.qstash_message_id = answer.message_id
        row.qstash_error = None
    return None


def publish_rows(
    session: Session,
    rows: Sequence[Prebooking],
    now: datetime,
    gateway: Gateway,
    config: Mapping[str, Any],
) -> RelayReport:
    """Publish every row that needs a message now, in one batch; store ids or the error.

    Never raises for QStash trouble: the error is stored, and the outbox or the relay retries.
    """
    report = RelayReport()
    planned, skipped = plan_rows(session, rows, now, config)
    report.skipped.update(skip.value for _, skip in skipped)
    if planned:
        failed = send(planned, gateway)
        report.unavailable = isinstance(failed, QStashUnavailable)
        report.errors += len(planned) if failed else 0
        report.published += 0 if failed else len(planned)
        session.commit()
    return report
