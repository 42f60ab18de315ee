"""The relay: publish pending prebookings without a message once QStash can take them.

Covers windows that were beyond QStash's maximum delay at creation, and publishes that failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import and_, not_, or_, select
from sqlalchemy.orm import Session

from flask_app.core.prebooking import Event, sources
from flask_app.models import Prebooking
from flask_app.qstash.dlq import DLQ_MARK
from flask_app.qstash.gateway import Gateway, get_gateway
from flask_app.qstash.publish import RelayReport, is_publishing, policy_from, publish_rows

#: Prebookings published per QStash batch request by the relay.
RELAY_BATCH = 100


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
        if part.unavailable:  # each further batch would wait out the timeout again
            report.unavailable = True
            return report
        after = (rows[-1].available_at, rows[-1].id)


def _relay_query(now: datetime, horizon: datetime, after: tuple[datetime, str] | None) -> Any:
    stmt = (
        select(Prebooking)
        .where(
            Prebooking.status.in_(sources(Event.CLAIM)),  # pending or session_expired
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
