"""Who leads a class's firing round: the `fire_groups` row, won by a conditional insert.

One row per class (`Prebooking.class_key`): its leader (a process token), its anchor (the
instant rank 0 fires) and its stagger (between ranks). The first process to bid for a class
inserts it (`INSERT ... ON CONFLICT DO NOTHING`, SQLite and PostgreSQL alike); the others read
the leader's terms, so every process derives the same instants. A row of a past round (its
anchor older than `stale`) is taken over by the next bid. The dispatcher's sweep deletes rows
an hour old.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from flask_app.core.execution import process_token
from flask_app.models import FireGroup


@dataclass(frozen=True)
class Election:
    """The outcome of one process's bid to lead a class."""

    won: bool
    anchor: datetime
    stagger: timedelta


def elect(
    session: Session,
    key: str,
    anchor: datetime,
    stagger: timedelta,
    now: datetime,
    stale: datetime,
    owner: str | None = None,
) -> Election:
    """Bid to lead class `key` with this anchor: a conditional insert, or a takeover of a
    group row whose anchor is older than `stale` (a past round); else the leader's terms."""
    values = {
        "class_key": key,
        "leader": owner or process_token(),
        "anchor_at": anchor,
        "stagger_us": round(stagger / timedelta(microseconds=1)),
        "elected_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(FireGroup).values(**values).on_conflict_do_nothing()
    won = session.execute(insert.returning(FireGroup.class_key)).first() is not None
    if not won:
        takeover = (
            update(FireGroup)
            .where(FireGroup.class_key == key, FireGroup.anchor_at < stale)
            .values(**values)
            .returning(FireGroup.class_key)
        )
        won = session.execute(takeover).first() is not None
    if won:
        session.commit()
        return Election(True, anchor, stagger)
    row = session.execute(
        select(FireGroup.anchor_at, FireGroup.stagger_us).where(FireGroup.class_key == key)
    ).one()
    session.commit()
    return Election(False, row.anchor_at, timedelta(microseconds=row.stagger_us))


def forget_groups(session: Session, before: datetime) -> int:
    """Delete group rows whose anchor is older than `before` (they only settled a past round)."""
    done = session.execute(delete(FireGroup).where(FireGroup.anchor_at < before))
    session.commit()
    return int(done.rowcount)  # type: ignore[attr-defined]
