"""Rollback: cancel the QStash messages of pending prebookings so that cron alone carries them.

Per chunk: cancel the messages at QStash, then clear the ids and bump `qstash_generation` in one
commit (so a later backfill gets fresh deduplication ids instead of QStash's cached answer).
A crash between the two steps is safe: the rerun cancels again (QStash counts 0) and clears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from flask_app.models import Prebooking
from flask_app.qstash.gateway import QStashError
from migration.backfill import MAX_CONSECUTIVE_FAILURES, WAITING, NoProgress, Progress, chunks

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 500


class CancelGateway(Protocol):
    """The part of flask_app.qstash.gateway.Gateway that rollback uses."""

    def cancel_many(self, message_ids: Sequence[str]) -> int: ...


@dataclass
class RollbackSummary:
    """What a rollback did (or would do)."""

    outstanding: int = 0  # pending prebookings that held a message id
    cancelled: int = 0  # messages QStash cancelled (already delivered/unknown ones don't count)
    cleared: int = 0  # rows whose id was cleared and generation bumped
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    aborted: bool = False
    dry_run: bool = False
    planned: list[tuple[str, str]] = field(default_factory=list)  # (prebooking id, message id)


_OUTSTANDING = and_(Prebooking.status.in_(WAITING), Prebooking.qstash_message_id.is_not(None))


def count_outstanding(session: Session) -> int:
    """Pending prebookings that hold a QStash message id."""
    stmt = select(func.count()).select_from(Prebooking).where(_OUTSTANDING)
    return session.scalar(stmt) or 0


def outstanding_pages(
    session_factory: Callable[[], Session], page_size: int
) -> Iterator[list[tuple[str, str]]]:
    """(prebooking id, message id) of pending prebookings with a message, keyset-paged on id."""
    after = ""
    while True:
        with session_factory() as session:
            rows = session.execute(
                select(Prebooking.id, Prebooking.qstash_message_id)
                .where(_OUTSTANDING, Prebooking.id > after)
                .order_by(Prebooking.id)
                .limit(page_size)
            ).all()
        if not rows:
            return
        yield [(pid, str(mid)) for pid, mid in rows]
        after = rows[-1][0]


_CLEAR = (
    update(Prebooking)
    .where(
        Prebooking.id == bindparam("b_id"),
        Prebooking.qstash_message_id == bindparam("b_message_id"),
    )
    .values(qstash_message_id=None, qstash_generation=Prebooking.qstash_generation + 1)
    .execution_options(synchronize_session=False)
)


def _clear(session_factory: Callable[[], Session], chunk: Sequence[tuple[str, str]]) -> int:
    """Clear the ids (only if unchanged) and bump the generations; how many rows changed."""
    params = [{"b_id": pid, "b_message_id": mid} for pid, mid in chunk]
    with session_factory() as session:
        session.connection().execute(_CLEAR, params)
        session.commit()
        left = session.scalar(
            select(func.count())
            .select_from(Prebooking)
            .where(
                Prebooking.id.in_([pid for pid, _ in chunk]),
                Prebooking.qstash_message_id.in_([mid for _, mid in chunk]),
            )
        )
    return len(chunk) - (left or 0)


def run_rollback(
    *,
    session_factory: Callable[[], Session],
    gateway: CancelGateway,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RollbackSummary:
    """Cancel and clear every outstanding message, chunk by chunk; a failed chunk is kept.

    Stops after MAX_CONSECUTIVE_FAILURES failed chunks in a row (summary.aborted).
    """
    summary = RollbackSummary(dry_run=dry_run)
    bar = progress or NoProgress()
    failures_in_row = 0
    for page in outstanding_pages(session_factory, chunk_size):
        summary.outstanding += len(page)
        if dry_run:
            summary.planned.extend(page)
            bar.update(len(page))
            continue
        for chunk in chunks(page, chunk_size):
            ok = _rollback_chunk(chunk, gateway, session_factory, summary)
            failures_in_row = 0 if ok else failures_in_row + 1
            bar.update(len(chunk))
        if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            summary.aborted = True
            break
    return summary


def _rollback_chunk(
    chunk: Sequence[tuple[str, str]],
    gateway: CancelGateway,
    session_factory: Callable[[], Session],
    summary: RollbackSummary,
) -> bool:
    """Cancel one chunk's messages, then clear its rows; on a QStash error keep the rows."""
    try:
        summary.cancelled += gateway.cancel_many([mid for _, mid in chunk])
    except QStashError as exc:  # keep the ids: the messages may still fire; rerun retries
        log.warning("rollback chunk of %d failed: %s", len(chunk), exc, exc_info=True)
        summary.failed += len(chunk)
        summary.errors.append(str(exc))
        return False
    summary.cleared += _clear(session_factory, chunk)
    return True
