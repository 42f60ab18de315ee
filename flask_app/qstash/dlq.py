"""Dead letters: settle the prebookings whose deliveries QStash gave up on, then clear them.

Never handed to a cron that is off: with no polling path, a prebooking still in reach is
published again a bounded number of times, then fails with the reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from flask_app import background, paths
from flask_app.core.execution import abandon
from flask_app.core.prebooking import Event, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash import outbox
from flask_app.qstash.gateway import Gateway, get_gateway
from flask_app.qstash.planning import EXECUTE_PATH

#: qstash_error prefix of prebookings whose message died in the DLQ and were handed to cron:
#: the relay must not publish them again (the deduplication id would return the dead message).
DLQ_MARK = "dlq: "
#: A pending prebooking whose window opened less than this ago is still worth another try
#: (a cron tick, or a new message).
CRON_REACH = timedelta(minutes=5)
#: How many times a prebooking whose message died is published again (QSTASH_DLQ_REPUBLISH),
#: when no polling path (cron) would pick it up; then it fails with the reason.
MAX_REPUBLISH = 2


@dataclass
class DlqReport:
    """What one reconcile-dlq run did, per outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    deleted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "deleted": self.deleted}


def reconcile_dlq(session: Session, now: datetime, *, gateway: Gateway | None = None) -> DlqReport:
    """Settle prebookings whose deliveries died in the DLQ, then clear those entries.

    Still in time (opening ahead, or within CRON_REACH): handed back to a polling path if one
    runs (cron), else published again with a fresh deduplication id, up to MAX_REPUBLISH
    times. Otherwise marked failed with the reason. Every death is counted on the prebooking
    (`qstash_dlq_count`, `qstash_dlq_reason`). Entries for other destinations are left alone.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = gateway or get_gateway()
    report = DlqReport()
    done: list[str] = []
    republished: list[str] = []
    for entry in list(gateway.dlq_messages()):
        if not str(entry.url).endswith(EXECUTE_PATH):
            continue
        outcome, prebooking_id = _settle(session, entry, now, app.config)
        report.outcomes[outcome] += 1
        done.append(entry.dlq_id)
        if outcome == "republished" and prebooking_id:
            republished.append(prebooking_id)
    report.deleted = gateway.dlq_delete_many(done)
    if republished:
        outbox.attempt_now(app, republished)
    return report


def _settle(
    session: Session, entry: Any, now: datetime, config: Mapping[str, Any]
) -> tuple[str, str | None]:
    prebooking_id = _prebooking_id(entry.body)
    row = session.get(Prebooking, prebooking_id) if prebooking_id else None
    if row is None:
        return "unknown", prebooking_id
    session.refresh(row)
    if row.status not in sources(Event.CLAIM):  # pending or session_expired: still to book
        return f"already_{row.status}", row.id
    if row.qstash_message_id not in (None, entry.message_id):
        return "superseded", row.id  # a newer message exists for it (e.g. re-published)
    reason = _dlq_reason(entry)
    row.qstash_dlq_count = (row.qstash_dlq_count or 0) + 1
    row.qstash_dlq_reason = reason[:2000]
    in_reach = row.available_at > now - CRON_REACH
    if in_reach and paths.has_polling_path(config):
        row.qstash_message_id = None
        row.qstash_error = (DLQ_MARK + reason)[:2000]
        session.commit()
        return "handed_to_cron", row.id
    limit = int(config.get("QSTASH_DLQ_REPUBLISH", MAX_REPUBLISH))
    if in_reach and row.qstash_dlq_count <= limit:
        _republish(session, row, now)
        return "republished", row.id
    session.commit()
    times = f"{row.qstash_dlq_count} time{'s' if row.qstash_dlq_count > 1 else ''}"
    abandon(session, row.id, f"dead-lettered by QStash {times} (DLQ); last: {reason}", now)
    return "failed", row.id


def _republish(session: Session, row: Prebooking, now: datetime) -> None:
    """Owe the prebooking a new message (a new generation: a fresh deduplication id)."""
    row.qstash_message_id = None
    row.qstash_error = None
    row.qstash_generation = (row.qstash_generation or 0) + 1
    outbox.enqueue(session, row, outbox.OutboxAction.PUBLISH, now)
    session.commit()


def reconcile_job(now: datetime) -> dict[str, Any]:
    """The background runner's job (inside an app context)."""
    with get_db().session() as session:
        return reconcile_dlq(session, now).to_json()


def init_app(app: Flask) -> None:
    """Reconcile the DLQ from the background runner too: once a minute, in one process."""
    interval = timedelta(seconds=float(app.config.get("QSTASH_DLQ_INTERVAL_S", 60)))
    background.get_runner(app).register("qstash-dlq", interval, reconcile_job, lease=True)


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
