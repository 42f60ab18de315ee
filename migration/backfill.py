"""Backfill: give every pending prebooking without a QStash message the one the create path would.

`plan_backfill` is pure (rows + `now` in, a Plan out); `apply_plan` publishes a plan through the
Gateway in batches and stores the message ids, one commit per batch; `run_backfill` streams the
pending rows in keyset pages and drives the two. A crash loses at most the in-flight batch: its
rows still have no message id, so a rerun publishes them again with the same deduplication ids,
and QStash (within its 10-minute window) answers with the same message ids.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, func, not_, or_, select, update
from sqlalchemy.orm import Session

from flask_app.core.prebooking import Event, sources
from flask_app.models import Prebooking
from flask_app.qstash.dlq import DLQ_MARK
from flask_app.qstash.gateway import Message, Published, QStashError, QStashRejected
from flask_app.qstash.planning import PublishPolicy, Skip, plan_row
from flask_app.qstash.publish import crowd_ranks

log = logging.getLogger(__name__)

PENDING = "pending"
#: The statuses that still wait for their window: pending, and session_expired (a stale stored
#: session is still tried at the instant, and a new PUT /api/sessions revives it).
WAITING = tuple(sorted(status.value for status in sources(Event.CLAIM)))
DEFAULT_BATCH_SIZE = 500
DEFAULT_PAGE_SIZE = 2000
# Windows opening sooner than this are the cron path's: a tick comes every 60 s anyway.
DEFAULT_MIN_NOTICE = timedelta(seconds=60)
# After this many batches fail in a row, QStash is down: stop instead of hammering it.
MAX_CONSECUTIVE_FAILURES = 3


class BatchGateway(Protocol):
    """The part of flask_app.qstash.gateway.Gateway the backfill uses (tests pass wrappers)."""

    def batch(self, msgs: Sequence[Message]) -> list[Published]: ...

    def cancel_many(self, message_ids: Sequence[str]) -> int: ...


class Progress(Protocol):
    """What apply_plan reports progress to (a tqdm bar, or a no-op)."""

    def update(self, n: int = 1) -> Any: ...


class NoProgress:
    """A progress sink that shows nothing."""

    def update(self, n: int = 1) -> None:
        """Ignore the step."""


@dataclass(frozen=True)
class PendingRow:
    """The columns of a prebooking that decide its message."""

    id: str
    user_email: str
    available_at: datetime
    status: str = PENDING
    qstash_message_id: str | None = None
    qstash_generation: int = 0
    crowd_rank: int = 0  # prebookings opening at the same instant created before it


@dataclass
class Plan:
    """Messages to publish, in order, and how many rows were skipped for which reason."""

    publish: list[tuple[str, Message]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    generations: dict[str, int] = field(default_factory=dict)  # of the rows to publish


@dataclass
class Summary:
    """What a backfill did (or, in a dry run, would do)."""

    seen: int = 0
    published: int = 0  # new messages QStash created
    deduplicated: int = 0  # QStash already had them (a rerun after a crash): id stored, no cost
    skipped: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    raced: int = 0  # the row changed while publishing (cancelled, claimed, published elsewhere)
    errors: list[str] = field(default_factory=list)
    aborted: bool = False
    dry_run: bool = False
    planned: list[tuple[str, Message]] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """Rows that now carry a message id."""
        return self.published + self.deduplicated


def plan_backfill(
    pending_rows: Iterable[PendingRow],
    now: datetime,
    policy: PublishPolicy,
    rollout_percent: int,
    min_notice: timedelta = DEFAULT_MIN_NOTICE,
) -> Plan:
    """Decide, for each row, the create path's message or why there is none."""
    plan = Plan()
    for row in pending_rows:
        planned = plan_row(
            row,
            now=now,
            policy=policy,
            rollout_percent=rollout_percent,
            min_notice=min_notice,
            crowd_rank=row.crowd_rank,
        )
        if isinstance(planned, Skip):
            plan.skipped[planned.value] += 1
        else:
            plan.publish.append((row.id, planned))
            plan.generations[row.id] = row.qstash_generation
    return plan


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def apply_plan(
    plan: Plan,
    gateway: BatchGateway,
    session_factory: Callable[[], Session],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Publish the plan batch by batch and store each batch's message ids in one commit.

    A failed batch (QStash unavailable or refusing) is recorded on its rows and counted; the
    rows keep no message id, so a rerun retries them. After MAX_CONSECUTIVE_FAILURES failed
    batches in a row the rest is not attempted (summary.aborted).
    """
    summary = summary if summary is not None else Summary()
    publisher = _Publisher(gateway, session_factory, summary, plan.generations)
    bar = progress or NoProgress()
    failures_in_row = 0
    for batch in chunks(plan.publish, batch_size):
        if summary.aborted:
            break
        ok = publisher.publish(batch)
        failures_in_row = 0 if ok else failures_in_row + 1
        summary.aborted = failures_in_row >= MAX_CONSECUTIVE_FAILURES
        bar.update(len(batch))
    return summary


@dataclass
class _Publisher:
    """Publishes batches and stores their ids, counting into one Summary."""

    gateway: BatchGateway
    session_factory: Callable[[], Session]
    summary: Summary
    generations: Mapping[str, int]

    def publish(self, batch: Sequence[tuple[str, Message]]) -> bool:
        """Publish one batch and store its ids; False if QStash failed all of it."""
        try:
            answers = self.gateway.batch([msg for _, msg in batch])
        except QStashRejected as exc:
            if len(batch) > 1:
                # QStash checks a whole batch before accepting any: isolate the bad message(s).
                return any([self.publish([item]) for item in batch])
            self._fail(batch, exc)
            return False
        except QStashError as exc:
            self._fail(batch, exc)
            return False
        self._store(batch, answers)
        return True

    def _fail(self, batch: Sequence[tuple[str, Message]], exc: QStashError) -> None:
        """Count the batch as failed and note why on its rows."""
        log.warning("backfill batch of %d failed: %s", len(batch), exc, exc_info=True)
        self.summary.failed += len(batch)
        self.summary.errors.append(str(exc))
        _record_error(self.session_factory, [pid for pid, _ in batch], str(exc))

    def _store(self, batch: Sequence[tuple[str, Message]], answers: Sequence[Published]) -> None:
        """Store the ids; cancel the messages of rows that changed meanwhile."""
        pairs = [
            (pid, a.message_id, self.generations.get(pid, 0))
            for (pid, _), a in zip(batch, answers, strict=True)
        ]
        stored = _store_message_ids(self.session_factory, pairs)
        self.summary.published += sum(1 for a in answers if not a.deduplicated)
        self.summary.deduplicated += sum(1 for a in answers if a.deduplicated)
        orphans = [mid for pid, mid, _ in pairs if not stored[pid]]
        if orphans:
            _cancel_orphans(self.gateway, orphans, self.summary)


_STORE = (
    update(Prebooking)
    .where(
        and_(
            Prebooking.id == bindparam("b_id"),
            # One comparison per status, not IN: executemany cannot expand a list parameter.
            or_(*(Prebooking.status == status for status in WAITING)),
            Prebooking.qstash_message_id.is_(None),
            Prebooking.qstash_generation == bindparam("b_generation"),
        )
    )
    .values(qstash_message_id=bindparam("b_message_id"), qstash_error=None)
    .execution_options(synchronize_session=False)
)


def _store_message_ids(
    session_factory: Callable[[], Session], pairs: Sequence[tuple[str, str, int]]
) -> dict[str, bool]:
    """Store (prebooking id, message id, generation) unless the row changed; who holds theirs."""
    params = [{"b_id": p, "b_message_id": m, "b_generation": g} for p, m, g in pairs]
    with session_factory() as session:
        session.connection().execute(_STORE, params)
        session.commit()
        rows = session.execute(
            select(Prebooking.id, Prebooking.qstash_message_id).where(
                Prebooking.id.in_([pid for pid, _, _ in pairs])
            )
        ).all()
    held = {pid: mid for pid, mid in rows}
    return {pid: held.get(pid) == mid for pid, mid, _ in pairs}


def _cancel_orphans(gateway: BatchGateway, message_ids: list[str], summary: Summary) -> None:
    """Cancel messages whose row changed while they were published (best effort)."""
    summary.raced += len(message_ids)
    try:
        gateway.cancel_many(message_ids)
    except QStashError as exc:  # the webhook's atomic claim makes a stray delivery harmless
        log.warning("could not cancel %d raced messages: %s", len(message_ids), exc)


def _record_error(session_factory: Callable[[], Session], ids: list[str], error: str) -> None:
    """Note why publishing failed on the rows (they keep no message id, so a rerun retries)."""
    with session_factory() as session:
        session.execute(
            update(Prebooking)
            .where(Prebooking.id.in_(ids), Prebooking.qstash_message_id.is_(None))
            .values(qstash_error=f"backfill: {error}"[:2000])
            .execution_options(synchronize_session=False)
        )
        session.commit()


# Rows whose QStash deliveries died in the DLQ (`qstash reconcile-dlq` marks them with DLQ_MARK)
# are cron's now: re-publishing would repeat the failure.
_UNPUBLISHED = and_(
    Prebooking.status.in_(WAITING),
    Prebooking.qstash_message_id.is_(None),
    or_(Prebooking.qstash_error.is_(None), not_(Prebooking.qstash_error.startswith(DLQ_MARK))),
)


def count_unpublished(session: Session) -> int:
    """Pending prebookings without a QStash message."""
    return session.scalar(select(func.count()).where(_UNPUBLISHED).select_from(Prebooking)) or 0


def unpublished_pages(
    session_factory: Callable[[], Session], page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[list[PendingRow]]:
    """Pending prebookings without a message, in pages keyed on id (never all rows at once)."""
    after = ""
    while True:
        with session_factory() as session:
            rows = session.execute(
                select(
                    Prebooking.id,
                    Prebooking.user_email,
                    Prebooking.available_at,
                    Prebooking.status,
                    Prebooking.qstash_message_id,
                    Prebooking.qstash_generation,
                )
                .where(_UNPUBLISHED, Prebooking.id > after)
                .order_by(Prebooking.id)
                .limit(page_size)
            ).all()
            ranks = crowd_ranks(session, ((row.id, row.available_at) for row in rows))
        if not rows:
            return
        yield [PendingRow(**row._asdict(), crowd_rank=ranks.get(row.id, 0)) for row in rows]
        after = rows[-1].id


def run_backfill(
    *,
    session_factory: Callable[[], Session],
    gateway: BatchGateway,
    clock: Callable[[], datetime],
    policy: PublishPolicy,
    rollout_percent: int,
    min_notice: timedelta = DEFAULT_MIN_NOTICE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    page_size: int = DEFAULT_PAGE_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """Stream the unpublished rows, plan each page at the current instant, publish it."""
    summary = Summary(dry_run=dry_run)
    bar = progress or NoProgress()
    for page in unpublished_pages(session_factory, max(page_size, batch_size)):
        summary.seen += len(page)
        plan = plan_backfill(page, clock(), policy, rollout_percent, min_notice)
        summary.skipped.update(plan.skipped)
        bar.update(sum(plan.skipped.values()))
        if dry_run:
            summary.planned.extend(plan.publish)
            bar.update(len(plan.publish))
            continue
        apply_plan(plan, gateway, session_factory, batch_size, bar, summary)
        if summary.aborted:
            break
    return summary
