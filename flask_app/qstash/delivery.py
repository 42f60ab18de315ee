"""The QStash path: publish on create, cancel on cancel, relay late publishes, handle deliveries.

A prebooking gets one delayed message, due `QSTASH_LEAD_SECONDS` before its window opens.
The delivery claims the prebooking, waits with a precise timer until its fire instant
(`available_at` plus a FIFO stagger among prebookings opening at the same instant) and books.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app.core import events
from flask_app.core.execution import Action, Attempt, abandon, get_executor
from flask_app.core.prebooking import Event, PrebookingStatus, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.observe import metrics
from flask_app.qstash.gateway import Gateway, Message, QStashError, QStashUnavailable, get_gateway
from flask_app.qstash.planning import EXECUTE_PATH, PublishPolicy, Skip, plan_row
from flask_app.schemas import describe
from flask_app.tasks import run_arrival

log = logging.getLogger(__name__)

#: qstash_error prefix of prebookings whose message died in the DLQ and were handed to cron:
#: the relay must not publish them again (the deduplication id would return the dead message).
DLQ_MARK = "dlq: "
#: A pending prebooking whose window opened less than this ago is still worth a cron tick.
CRON_REACH = timedelta(minutes=5)
#: Prebookings published per QStash batch request by the relay.
RELAY_BATCH = 100
#: Outcomes are recorded this long after the last of a burst of twins fired (see FireSlot).
SETTLE_MARGIN = timedelta(milliseconds=20)
#: QStash's status for "do not retry" (with the Upstash-NonRetryable-Error header).
NON_RETRYABLE = 489


class DeliveryBody(BaseModel):
    """The JSON QStash delivers to /api/qstash/prebooking-execute (CONTRACT.md)."""

    model_config = ConfigDict(extra="ignore")

    prebooking_id: str = Field(alias="prebookingId", min_length=1, max_length=64)
    user_email: str = Field(alias="userEmail", max_length=320)
    scheduled_at: AwareDatetime = Field(alias="scheduledAt")


@dataclass(frozen=True)
class Reply:
    """What the webhook answers QStash: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RelayReport:
    """What one relay run did."""

    published: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"published": self.published, "skipped": dict(self.skipped), "errors": self.errors}


@dataclass
class DlqReport:
    """What one reconcile-dlq run did, per outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    deleted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "deleted": self.deleted}


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


def _twins_of(instants: Iterable[datetime]) -> Any:
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
        .where(*_twins_of(set(wanted.values())))
        .subquery()
    )
    found = session.execute(select(ranked.c.id, ranked.c.rank).where(ranked.c.id.in_(wanted)))
    return {row.id: int(row.rank) for row in found}


def publish_rows(
    session: Session,
    rows: Sequence[Prebooking],
    now: datetime,
    gateway: Gateway,
    config: Mapping[str, Any],
) -> RelayReport:
    """Publish every row that needs a message now, in one batch; store ids or the error.

    Never raises for QStash trouble: the error is stored, and the relay or cron covers it.
    """
    report = RelayReport()
    planned: list[tuple[Prebooking, Message]] = []
    ranks = crowd_ranks(session, ((row.id, row.available_at) for row in rows))
    for row in rows:
        plan = plan_for(row, now, config, ranks.get(row.id, 0))
        if isinstance(plan, Skip):
            report.skipped[plan.value] += 1
        else:
            planned.append((row, plan))
    if planned:
        _send(planned, gateway, report)
        session.commit()
    return report


def _send(planned: list[tuple[Prebooking, Message]], gateway: Gateway, report: RelayReport) -> None:
    try:
        answers = gateway.batch([msg for _, msg in planned])
    except QStashError as exc:
        log.warning("publishing %d prebooking(s) to QStash failed: %s", len(planned), exc)
        kind = "unavailable" if isinstance(exc, QStashUnavailable) else "rejected"
        metrics.publish_error(kind)
        for row, _ in planned:
            row.qstash_error = f"publish: {exc}"[:2000]
        report.errors += len(planned)
        return
    for (row, _), answer in zip(planned, answers, strict=True):
        row.qstash_message_id = answer.message_id
        row.qstash_error = None
    report.published += len(planned)


def relay(session: Session, now: datetime, *, gateway: Gateway | None = None) -> RelayReport:
    """Publish pending prebookings without a message that QStash can now take.

    Covers windows that were beyond QStash's maximum delay at creation and publishes that
    failed. Call it from the cron tick (every minute) or `flask --app wsgi qstash relay`.
    """
    config = current_app.config
    report = RelayReport()
    if not is_publishing(config):
        return report
    policy = policy_from(config)
    gateway = gateway or get_gateway()
    horizon = now + policy.max_delay + policy.lead
    after: tuple[datetime, str] | None = None
    while True:
        rows = list(session.scalars(_relay_query(now, horizon, after)))
        if not rows:
            return report
        part = publish_rows(session, rows, now, gateway, config)
        report.published += part.published
        report.skipped.update(part.skipped)
        report.errors += part.errors
        after = (rows[-1].available_at, rows[-1].id)


def _relay_query(now: datetime, horizon: datetime, after: tuple[datetime, str] | None) -> Any:
    stmt = (
        select(Prebooking)
        .where(
            Prebooking.status.in_(sources(Event.CLAIM)),
            Prebooking.qstash_message_id.is_(None),
            Prebooking.available_at > now,
            Prebooking.available_at <= horizon,
            or_(
                Prebooking.qstash_error.is_(None),
                not_(Prebooking.qstash_error.startswith(DLQ_MARK)),
            ),
        )
        .order_by(Prebooking.available_at, Prebooking.id)
        .limit(RELAY_BATCH)
    )
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            or_(
                Prebooking.available_at > at,
                and_(Prebooking.available_at == at, Prebooking.id > last_id),
            )
        )
    return stmt


def _on_created(app: Flask, prebooking: Prebooking, session: Session, **_: Any) -> None:
    """Publish the new prebooking's message before the API answers (201 shows its id)."""
    if not is_publishing(app.config):
        return
    now = get_executor(app).clock.now()
    try:
        publish_rows(session, [prebooking], now, get_gateway(app), app.config)
    except Exception:  # the prebooking is saved; the relay or the cron path covers it
        log.exception("publishing prebooking %s failed unexpectedly", prebooking.id)
        session.rollback()


def _on_cancelled(app: Flask, prebooking: Prebooking, session: Session, **_: Any) -> None:
    """Cancel the message; if that fails, a late delivery finds it cancelled and books nothing."""
    if not prebooking.qstash_message_id:
        return
    try:
        gone = get_gateway(app).cancel(prebooking.qstash_message_id)
    except QStashError as exc:
        log.warning("could not cancel QStash message of prebooking %s: %s", prebooking.id, exc)
        return
    log.info("QStash message of prebooking %s cancelled=%s", prebooking.id, gone)


def init_app(app: Flask) -> None:
    """Connect the API's signals to the QStash path (module-level receivers: no weak-ref loss)."""
    events.prebooking_created.connect(_on_created, sender=app)
    events.prebooking_cancelled.connect(_on_cancelled, sender=app)


# --- deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FireSlot:
    """Where a prebooking fires among the prebookings opening at the same instant (twins)."""

    fire_at: datetime  # its opening plus one stagger per earlier-created twin (FIFO)
    settle_at: datetime  # after the last twin fired: record the outcome from then on


def fire_slot(session: Session, row: Prebooking, stagger: timedelta) -> FireSlot:
    """Rank the row among its twins by (created_at, id), with one indexed count query.

    Every status counts, so the rank of a prebooking never changes while its twins fire.
    """
    twins = _twins_of([row.available_at])
    earlier = or_(
        Prebooking.created_at < row.created_at,
        and_(Prebooking.created_at == row.created_at, Prebooking.id < row.id),
    )
    # One statement for both counts (admission cost matters when hundreds arrive together).
    counts = select(func.count(), func.count().filter(earlier)).where(*twins)
    total, rank = session.execute(counts).one()
    last_fire = row.available_at + stagger * max(0, total - 1)
    return FireSlot(row.available_at + stagger * rank, last_fire + SETTLE_MARGIN)


def handle_delivery(raw_body: bytes, headers: Mapping[str, str], now: datetime) -> Reply:
    """Answer one verified QStash delivery (the signature was checked by the caller)."""
    try:
        body = DeliveryBody.model_validate_json(raw_body)
    except ValidationError as exc:
        # Signed by our QStash but unreadable: retrying cannot fix it.
        return _non_retryable(f"invalid delivery body: {describe(exc)[0]}")
    config = current_app.config
    message_id = headers.get("Upstash-Message-Id")
    retried = _as_int(headers.get("Upstash-Retried"))
    if config["QSTASH_SHADOW"]:
        seen = run_arrival(
            body.prebooking_id,
            "shadow",
            arrived_at=now,
            message_id=message_id,
            retried=retried,
        )
        return Reply(200, _describe(seen) | {"shadow": True})
    if not config["QSTASH_ENABLED"]:
        log.info(
            "QStash delivery %s for %s ignored: QSTASH_ENABLED is false",
            message_id,
            body.prebooking_id,
        )
        return Reply(
            200, {"prebookingId": body.prebooking_id, "ignored": "QSTASH_ENABLED is false"}
        )
    try:
        when, settle = _prepare(body.prebooking_id, config)
        attempt = run_arrival(
            body.prebooking_id,
            "qstash",
            arrived_at=now,
            fire_at=when,
            message_id=message_id,
            retried=retried,
            settle_at=settle,
        )
    except SQLAlchemyError as exc:  # nothing was booked without the database: QStash retries
        log.warning("delivery %s: database trouble: %s", message_id, type(exc).__name__)
        return Reply(503, {"error": "database unavailable; QStash will retry"})
    return reply_for(attempt)


def _prepare(
    prebooking_id: str, config: Mapping[str, Any]
) -> tuple[datetime | None, datetime | None]:
    """The fire and settle instants, and a warm pooled connection to the box meanwhile."""
    with get_db().session() as session:
        row = session.get(Prebooking, prebooking_id)
        if row is None or row.status not in sources(Event.CLAIM):
            return None, None
        stagger = timedelta(milliseconds=float(config["QSTASH_FIRE_STAGGER_MS"]))
        slot = fire_slot(session, row, stagger)
        box = str(row.booking_data.get("box", ""))
    executor = get_executor()
    # With the firing line, the booking is prepared over its own fresh connection, so a warm
    # pooled one would go unused: it would only cost ~2 ms of CPU per delivery and a request
    # to the box just before its burst. Without it, httpx books and the warm connection helps.
    warm_up = getattr(executor.client, "warm_up", None) if executor.line is None else None
    if warm_up is not None and box:
        warm_up(box)  # the booking request then pays no TCP/TLS handshake at fire time
    return slot.fire_at, slot.settle_at


def reply_for(attempt: Attempt) -> Reply:
    """Map what the arrival did to QStash's language: 2xx done, 5xx retry."""
    body = _describe(attempt)
    if attempt.action is Action.RELEASED:
        # Nothing final happened and the claim was given back: QStash retries; if the request
        # may have reached AimHarder, the next claimant asks AimHarder before booking again.
        return Reply(503, body | {"error": "transient failure; QStash will retry"})
    return Reply(200, body)


def _describe(attempt: Attempt) -> dict[str, Any]:
    return {
        "prebookingId": attempt.prebooking_id,
        "action": attempt.action.value,
        "status": attempt.status,
        "outcome": attempt.outcome.value if attempt.outcome else None,
        "lateness_ms": attempt.lateness_ms,
        "fire_lateness_ms": attempt.fire_lateness_ms,
        "detail": attempt.detail,
    }


def _non_retryable(message: str) -> Reply:
    return Reply(NON_RETRYABLE, {"error": message}, {"Upstash-NonRetryable-Error": "true"})


def _as_int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


# --- dead-letter queue ----------------------------------------------------------------------


def reconcile_dlq(session: Session, now: datetime, *, gateway: Gateway | None = None) -> DlqReport:
    """Settle prebookings whose deliveries died in the DLQ, then clear those entries.

    Still in time (opening ahead, or within CRON_REACH): handed back to the cron path.
    Otherwise marked failed with the reason. Entries for other destinations are left alone.
    """
    gateway = gateway or get_gateway()
    report = DlqReport()
    done: list[str] = []
    for entry in list(gateway.dlq_messages()):
        if not str(entry.url).endswith(EXECUTE_PATH):
            continue
        report.outcomes[_settle(session, entry, now)] += 1
        done.append(entry.dlq_id)
    report.deleted = gateway.dlq_delete_many(done)
    return report


def _settle(session: Session, entry: Any, now: datetime) -> str:
    prebooking_id = _prebooking_id(entry.body)
    row = session.get(Prebooking, prebooking_id) if prebooking_id else None
    if row is None:
        return "unknown"
    session.refresh(row)
    if row.status not in sources(Event.CLAIM):
        return f"already_{row.status}"
    if row.qstash_message_id not in (None, entry.message_id):
        return "superseded"  # a newer message exists for it (e.g. re-published)
    reason = _dlq_reason(entry)
    if row.available_at > now - CRON_REACH:
        row.qstash_message_id = None
        row.qstash_error = (DLQ_MARK + reason)[:2000]
        session.commit()
        return "handed_to_cron"
    abandon(session, row.id, reason, now)
    return "failed"


def _prebooking_id(body: str | None) -> str | None:
    try:
        value = json.loads(body or "")
    except ValueError:
        return None
    found = value.get("prebookingId") if isinstance(value, dict) else None
    return str(found) if found else None


def _dlq_reason(entry: Any) -> str:
    answer = (entry.response_body or "").strip().replace("\n", " ")[:300]
    return f"QStash gave up delivering (last answer {entry.response_status}: {answer or 'empty'})"
