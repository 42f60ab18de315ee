"""The transactional outbox: every QStash call a prebooking change owes, kept until it is done.

Creating a prebooking writes its `publish` entry, and cancelling one writes its `cancel` entry,
in the same transaction as the change (the `prebooking_saving` signal), so no change is ever
committed without the call it owes. After the commit, the API tries the call inline, bounded
by `within` (the API must answer in 2 s whatever QStash does). What is still owed is retried
by every process's background runner (`drain`, every second) with exponential backoff, up to
`max_attempts`; a given-up entry stays in the table (health, metrics) while the relay (windows
far enough ahead) and the dispatcher's sweep (at the instant) still cover its prebooking.

A `notify` entry owes an outcome event to the user's notify_url: flask_app/notify.py writes it
and plugs in how its message is built (`NOTIFY_BUILDER`), so this module imports nothing of it.

One claimant across processes and instances: an entry is taken with one conditional UPDATE
(a lease: `leased_by`, `lease_expires_at`), and every later write checks the lease.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import Flask, current_app
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from flask_app import background
from flask_app.core import events
from flask_app.core.execution import get_executor
from flask_app.db import get_db
from flask_app.models import OutboxEntry, Prebooking
from flask_app.observe import metrics
from flask_app.qstash.gateway import Gateway, Message, QStashError, QStashRejected, get_gateway
from flask_app.qstash.publish import is_publishing, plan_rows, send

log = logging.getLogger(__name__)

_EXT = "qstash_outbox"


class OutboxAction(StrEnum):
    """The QStash call an entry owes."""

    PUBLISH = "publish"
    CANCEL = "cancel"
    NOTIFY = "notify"  # an outcome event to the user's notify_url (flask_app/notify.py)


#: app.extensions key of the function that builds a `notify` entry's message from its
#: prebooking as it is now (None: nothing to announce any more).
NOTIFY_BUILDER = "qstash_outbox_notify"
NotifyBuilder = Callable[[Session, Prebooking, datetime], Message | None]


@dataclass(frozen=True)
class OutboxSettings:
    """How the outbox retries (OUTBOX_* in flask_app/config.py)."""

    #: The create's inline attempt waits at most this: the API answers within 2 s, whatever
    #: QStash does. The gateway's own timeouts bound the call itself.
    inline_within: timedelta = timedelta(seconds=1.5)
    first_retry: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(seconds=30)
    max_attempts: int = 10  # 1 + 1 + 2 + 4 + 8 + 16 + 30 × 3: about 2.5 minutes of QStash down
    lease: timedelta = timedelta(seconds=30)  # longer than any one QStash call (fail fast)
    batch: int = 100
    interval: timedelta = timedelta(seconds=1)  # how often each process drains

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutboxSettings:
        """Read OUTBOX_INLINE_S, OUTBOX_MAX_ATTEMPTS and OUTBOX_INTERVAL_S when set."""
        base = cls()
        return cls(
            inline_within=timedelta(seconds=float(config.get("OUTBOX_INLINE_S", 1.5))),
            max_attempts=int(config.get("OUTBOX_MAX_ATTEMPTS", base.max_attempts)),
            interval=timedelta(seconds=float(config.get("OUTBOX_INTERVAL_S", 1.0))),
        )

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failure: 1 s, 2 s, 4 s, ... up to max_backoff."""
        return min(self.first_retry * (1 << max(0, attempts - 1)), self.max_backoff)


@dataclass
class OutboxReport:
    """What one drain (or inline attempt) did."""

    published: int = 0
    cancelled: int = 0
    notified: int = 0
    settled: int = 0  # nothing to do any more (not pending, not in the rollout, ...)
    retrying: int = 0
    gave_up: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


# --- writing entries (inside the change's transaction) -----------------------------------------


def enqueue(
    session: Session,
    prebooking: Prebooking,
    action: OutboxAction,
    now: datetime,
    *,
    hold: timedelta = timedelta(0),
) -> None:
    """Add the entry to the session; the caller's commit writes it with the change.

    hold: keep the runner off it this long, because the caller makes the call inline right
    after its commit (`attempt_now`); otherwise a runner could lease it first and the API
    would answer without the message id it was about to show.
    """
    message_id = prebooking.qstash_message_id if action is OutboxAction.CANCEL else None
    session.add(
        OutboxEntry(
            prebooking_id=prebooking.id,
            action=action.value,
            message_id=message_id,
            created_at=now,
            due_at=now + hold,
            attempts=0,
        )
    )


def _on_saving(app: Flask, prebooking: Prebooking, session: Session, change: str, **_: Any) -> None:
    now = get_executor(app).clock.now()
    hold = OutboxSettings.from_config(app.config).inline_within  # _on_committed tries it inline
    if change == "created" and is_publishing(app.config):
        enqueue(session, prebooking, OutboxAction.PUBLISH, now, hold=hold)
    elif change == "cancelled" and (
        prebooking.qstash_message_id or _publish_owed(session, prebooking.id)
    ):
        enqueue(session, prebooking, OutboxAction.CANCEL, now, hold=hold)


def _on_committed(app: Flask, prebooking: Prebooking, session: Session, **_: Any) -> None:
    """Try the owed call now (bounded); then the API's answer shows the message id if any."""
    try:
        attempt_now(app, [prebooking.id])
        session.refresh(prebooking)
    except Exception:  # the change is committed and its entry is owed: the runner retries
        log.exception("inline QStash call for prebooking %s failed", prebooking.id)
        session.rollback()


# --- claiming and doing ----------------------------------------------------------------------


def _due(now: datetime, *, held_too: bool = False) -> Any:
    """Entries a claimant may lease now: not given up, not leased; and due, unless `held_too`
    (the inline attempt takes its own held entries at once)."""
    free = or_(OutboxEntry.lease_expires_at.is_(None), OutboxEntry.lease_expires_at < now)
    if held_too:
        return and_(OutboxEntry.gave_up_at.is_(None), free)
    return and_(OutboxEntry.gave_up_at.is_(None), OutboxEntry.due_at <= now, free)


def claim(
    session: Session,
    now: datetime,
    owner: str,
    settings: OutboxSettings,
    prebooking_ids: Sequence[str] | None = None,
) -> list[int]:
    """Lease the due entries (of `prebooking_ids` only, when given: then held ones too, as the
    inline attempt of the change that wrote them): one conditional UPDATE, re-checked per row,
    so two claimants never both take an entry."""
    inline = prebooking_ids is not None
    pick = select(OutboxEntry.id).where(_due(now, held_too=inline))
    if prebooking_ids is not None:
        pick = pick.where(OutboxEntry.prebooking_id.in_(list(prebooking_ids)))
    pick = pick.order_by(OutboxEntry.due_at, OutboxEntry.id).limit(settings.batch)
    stmt = (
        update(OutboxEntry)
        .where(OutboxEntry.id.in_(pick.scalar_subquery()), _due(now, held_too=inline))
        .values(
            leased_by=owner,
            lease_expires_at=now + settings.lease,
            attempts=OutboxEntry.attempts + 1,
        )
        .returning(OutboxEntry.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(session.scalars(stmt))
    session.commit()
    return ids


def deliver(
    session: Session,
    ids: Sequence[int],
    owner: str,
    now: datetime,
    *,
    gateway: Gateway,
    config: Mapping[str, Any],
    settings: OutboxSettings,
) -> OutboxReport:
    """Make the calls the leased entries owe; delete the done ones, back off the others."""
    report = OutboxReport()
    mine = OutboxEntry.id.in_(list(ids)), OutboxEntry.leased_by == owner
    entries = list(session.scalars(select(OutboxEntry).where(*mine).order_by(OutboxEntry.id)))
    publishes = [e for e in entries if e.action == OutboxAction.PUBLISH]
    _publish(session, publishes, now, gateway, config, settings, report)
    for entry in entries:
        if entry.action == OutboxAction.CANCEL:
            _cancel(session, entry, now, gateway, settings, report)
        elif entry.action == OutboxAction.NOTIFY:
            _notify(session, entry, now, gateway, settings, report)
    session.commit()
    return report


def _notify(
    session: Session,
    entry: OutboxEntry,
    now: datetime,
    gateway: Gateway,
    settings: OutboxSettings,
    report: OutboxReport,
) -> None:
    build: NotifyBuilder | None = current_app.extensions.get(NOTIFY_BUILDER)
    row = session.get(Prebooking, entry.prebooking_id)
    message = build(session, row, now) if build is not None and row is not None else None
    if message is None:  # nothing to announce any more (e.g. revived meanwhile)
        session.delete(entry)
        report.settled += 1
        return
    try:
        gateway.publish(message)
    except QStashError as exc:
        final = isinstance(exc, QStashRejected)
        _retry(entry, f"notify: {exc}", now, settings, report, final=final)
        return
    session.delete(entry)
    report.notified += 1


def _publish(
    session: Session,
    entries: Sequence[OutboxEntry],
    now: datetime,
    gateway: Gateway,
    config: Mapping[str, Any],
    settings: OutboxSettings,
    report: OutboxReport,
) -> None:
    rows = {r.id: r for r in _prebookings(session, [e.prebooking_id for e in entries])}
    planned, skipped = plan_rows(session, list(rows.values()), now, config)
    for _, skip in skipped:
        report.skipped[skip.value] = report.skipped.get(skip.value, 0) + 1
    failed = send(planned, gateway)
    sent = {row.id for row, _ in planned}
    # QStash refused the request itself (4xx): the same request will not do better later.
    final = isinstance(failed, QStashRejected)
    for entry in entries:
        if failed and entry.prebooking_id in sent:
            _retry(entry, str(failed), now, settings, report, rows[entry.prebooking_id], final)
        else:
            session.delete(entry)
            report.settled += entry.prebooking_id not in sent
    report.published += 0 if failed else len(planned)


def _cancel(
    session: Session,
    entry: OutboxEntry,
    now: datetime,
    gateway: Gateway,
    settings: OutboxSettings,
    report: OutboxReport,
) -> None:
    row = session.get(Prebooking, entry.prebooking_id)
    message_id = entry.message_id or (row.qstash_message_id if row else None)
    if message_id is None and _publish_owed(session, entry.prebooking_id):
        _retry(entry, "cancel: its publish is still in flight", now, settings, report)
        return
    if message_id is None:  # never published: nothing to cancel
        session.delete(entry)
        report.settled += 1
        return
    try:
        gone = gateway.cancel(message_id)
    except QStashError as exc:
        _retry(entry, f"cancel: {exc}", now, settings, report)
        return
    log.info(
        "QStash message %s of prebooking %s cancelled=%s", message_id, entry.prebooking_id, gone
    )
    session.delete(entry)
    report.cancelled += 1


def _publish_owed(session: Session, prebooking_id: str) -> bool:
    """A publish of the prebooking is still owed (its message id may yet appear): a cancel
    must follow it."""
    found = session.scalar(
        select(OutboxEntry.id)
        .where(
            OutboxEntry.prebooking_id == prebooking_id,
            OutboxEntry.action == OutboxAction.PUBLISH,
            OutboxEntry.gave_up_at.is_(None),
        )
        .limit(1)
    )
    return found is not None


def _retry(
    entry: OutboxEntry,
    error: str,
    now: datetime,
    settings: OutboxSettings,
    report: OutboxReport,
    row: Prebooking | None = None,
    final: bool = False,
) -> None:
    entry.last_error = error[:2000]
    entry.leased_by = entry.lease_expires_at = None
    if entry.attempts < settings.max_attempts and not final:
        entry.due_at = now + settings.backoff(entry.attempts)
        report.retrying += 1
        return
    entry.gave_up_at = now
    report.gave_up += 1
    if row is not None:
        row.qstash_error = f"publish: gave up after {entry.attempts} attempts: {error}"[:2000]
    log.error(
        "outbox: gave up on %s of prebooking %s: %s", entry.action, entry.prebooking_id, error
    )


def _prebookings(session: Session, ids: Sequence[str]) -> list[Prebooking]:
    if not ids:
        return []
    return list(session.scalars(select(Prebooking).where(Prebooking.id.in_(list(ids)))))


# --- the two ways in: inline after a change, and the background runner --------------------------


def new_owner() -> str:
    """A lease owner token for one claim."""
    return f"outbox:{uuid.uuid4().hex[:16]}"


def attempt_now(app: Flask, prebooking_ids: Sequence[str], within: timedelta | None = None) -> bool:
    """Make the owed calls of these prebookings now, waiting at most `within` (default: the
    settings' inline bound); True if they finished in time. A call still running then
    finishes in the background, its writes guarded by the lease."""
    settings = OutboxSettings.from_config(app.config)
    owner, now = new_owner(), get_executor(app).clock.now()
    with get_db(app).session() as session:
        ids = claim(session, now, owner, settings, prebooking_ids)
    if not ids:
        return True
    done = threading.Event()

    def run() -> None:
        try:
            with app.app_context(), get_db(app).session() as session:
                deliver(
                    session, ids, owner, now,
                    gateway=get_gateway(app), config=app.config, settings=settings,
                )  # fmt: skip
        except Exception:  # a bug, not QStash trouble: the lease runs out and the runner retries
            log.exception("inline QStash call for %s failed", prebooking_ids)
        finally:
            done.set()

    worker = threading.Thread(target=run, name="outbox-inline", daemon=True)
    worker.start()
    worker.join((within or settings.inline_within).total_seconds())
    if not done.is_set():
        log.warning("inline QStash call for %s still running; the outbox owes it", prebooking_ids)
    return done.is_set()


def drain(now: datetime) -> dict[str, Any]:
    """The runner's job: make every due call, batch by batch (inside an app context)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = OutboxSettings.from_config(app.config)
    total = OutboxReport()
    gateway = get_gateway(app)
    with get_db(app).session() as session:
        while True:
            owner = new_owner()
            ids = claim(session, now, owner, settings)
            if ids:
                part = deliver(
                    session, ids, owner, now, gateway=gateway, config=app.config, settings=settings
                )
                _add(total, part)
            if len(ids) < settings.batch:
                return total.to_json()


def _add(total: OutboxReport, part: OutboxReport) -> None:
    for name in ("published", "cancelled", "notified", "settled", "retrying", "gave_up"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    for skip, count in part.skipped.items():
        total.skipped[skip] = total.skipped.get(skip, 0) + count


def stats(session: Session, now: datetime) -> dict[str, int]:
    """Entries still owed, those waiting for a retry, and those given up (health, metrics)."""
    owed = OutboxEntry.gave_up_at.is_(None)
    count = func.count(OutboxEntry.id)
    row = session.execute(
        select(
            count.filter(owed),
            count.filter(owed, OutboxEntry.attempts > 0),
            count.filter(OutboxEntry.gave_up_at.is_not(None)),
        )
    ).one()
    return {"owed": int(row[0]), "retrying": int(row[1]), "gave_up": int(row[2])}


def stats_job(now: datetime) -> dict[str, int]:
    """The runner's job: count the entries for health and metrics (inside an app context)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    with get_db(app).session() as session:
        found = stats(session, now)
    app.extensions[_EXT] = found
    metrics.outbox_entries(found, app)
    return found


def last_stats(app: Flask) -> dict[str, int] | None:
    """The counts of the last stats_job run in this process (None before the first)."""
    found: dict[str, int] | None = app.extensions.get(_EXT)
    return found


def init_app(app: Flask) -> None:
    """Write entries with each change, try them after its commit (module-level receivers),
    and retry what is owed from the background runner."""
    events.prebooking_saving.connect(_on_saving, sender=app)
    events.prebooking_created.connect(_on_committed, sender=app)
    events.prebooking_cancelled.connect(_on_committed, sender=app)
    runner = background.get_runner(app)
    runner.register("qstash-outbox", OutboxSettings.from_config(app.config).interval, drain)
    runner.register("qstash-outbox-stats", timedelta(seconds=15), stats_job)
