"""Dead letters: settle the prebookings whose deliveries QStash gave up on, then clear them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from flask_app.core.execution import abandon
from flask_app.core.prebooking import Event, sources
from flask_app.models import Prebooking
from flask_app.qstash.gateway import Gateway, get_gateway
from flask_app.qstash.planning import EXECUTE_PATH

#: qstash_error prefix of prebookings whose message died in the DLQ and were handed to cron:
#: the relay must not publish them again (the deduplication id would return the dead message).
DLQ_MARK = "dlq: "
#: A pending prebooking whose window opened less than this ago is still worth a cron tick.
CRON_REACH = timedelta(minutes=5)


@dataclass
class DlqReport:
    """What one reconcile-dlq run did, per outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    deleted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "deleted": self.deleted}


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
    if row.status not in sources(Event.CLAIM):  # pending or session_expired: still to book
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
