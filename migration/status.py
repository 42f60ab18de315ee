"""Status: where the pending work stands between the cron path and QStash (read-only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, not_, select
from sqlalchemy.orm import Session

from flask_app.models import Prebooking
from flask_app.qstash.dlq import DLQ_MARK
from flask_app.qstash.planning import PublishPolicy
from migration.backfill import WAITING, plan_backfill, unpublished_pages


def collect_status(
    *,
    session_factory: Callable[[], Session],
    now: datetime,
    policy: PublishPolicy,
    rollout_percent: int,
    min_notice: timedelta,
) -> dict[str, int]:
    """Counts: prebookings by status, pending with/without a message, and what backfill would do."""
    out: Counter[str] = Counter()
    with session_factory() as session:
        for status, n in session.execute(
            select(Prebooking.status, func.count()).group_by(Prebooking.status)
        ):
            out[f"status.{status}"] = n
        pending = select(func.count()).select_from(Prebooking).where(Prebooking.status.in_(WAITING))
        out["pending.with_message"] = (
            session.scalar(pending.where(Prebooking.qstash_message_id.is_not(None))) or 0
        )
        no_message = pending.where(Prebooking.qstash_message_id.is_(None))
        dead = Prebooking.qstash_error.startswith(DLQ_MARK)
        out["pending.dead_lettered"] = session.scalar(no_message.where(dead)) or 0
        out["pending.with_publish_error"] = (
            session.scalar(no_message.where(Prebooking.qstash_error.is_not(None), not_(dead))) or 0
        )
    for page in unpublished_pages(session_factory):
        out["pending.without_message"] += len(page)
        plan = plan_backfill(page, now, policy, rollout_percent, min_notice)
        out["backfill.would_publish"] += len(plan.publish)
        for reason, n in plan.skipped.items():
            out[f"backfill.skip.{reason}"] += n
    out.setdefault("pending.without_message", 0)
    out.setdefault("backfill.would_publish", 0)
    return dict(sorted(out.items()))
