"""Who leads a class's firing round: the `fire_groups` row, won by a conditional insert.

One row per class (`Prebooking.class_key`): its leader (a process token), its anchor (the
instant rank 0 fires) and its stagger (between ranks). The first process to bid for a class
inserts it (`INSERT ... ON CONFLICT DO NOTHING`, SQLite and PostgreSQL alike); the others read
the leader's terms, so every process derives the same instants. A row of a past round (its
anchor older than `stale`) is taken over by the next bid. The dispatcher's sweep deletes rows
an hour old.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from flask_app.core.execution import process_token
from flask_app.models import DispatchProcess, FireGroup


@dataclass(frozen=True)
class Election:
    """The outcome of one process's bid to lead a class."""

    won: bool
    anchor: datetime
    stagger: timedelta


@dataclass(frozen=True)
class Bid:
    """One class's terms as this process proposes them."""

    key: str
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
    return elect_many(session, [Bid(key, anchor, stagger)], now, stale, owner)[key]


def elect_many(
    session: Session, bids: Sequence[Bid], now: datetime, stale: datetime, owner: str | None = None
) -> dict[str, Election]:
    """`elect` for several classes: one multi-row conditional insert, then the leaders' terms
    of those it lost in one read (a takeover of a past round's row is rare: one each)."""
    if not bids:
        return {}
    leader = owner or process_token()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # In class-key order: processes bidding for overlapping classes at once then take the
    # unique-index entries in one order, and never deadlock (a 5,000-prebooking run over two
    # instances hit PostgreSQL's DeadlockDetected with the arrival order).
    rows = [_values(bid, leader, now) for bid in sorted(bids, key=lambda bid: bid.key)]
    insert = dialect.insert(FireGroup).values(rows).on_conflict_do_nothing()
    won = set(session.execute(insert.returning(FireGroup.class_key)).scalars())
    by_key = {bid.key: bid for bid in bids}
    lost = sorted(key for key in by_key if key not in won)
    terms = {}
    if lost:
        found = select(FireGroup.class_key, FireGroup.anchor_at, FireGroup.stagger_us)
        terms = {
            r.class_key: r for r in session.execute(found.where(FireGroup.class_key.in_(lost)))
        }
    for key in lost:
        if (
            key in terms
            and terms[key].anchor_at < stale
            and _take_over(session, by_key[key], leader, now, stale)
        ):
            won.add(key)
    session.commit()
    out = {
        key: Election(True, bid.anchor, bid.stagger) for key, bid in by_key.items() if key in won
    }
    for key in lost:
        if key in won:
            continue
        row = terms.get(key)
        if row is None:  # deleted meanwhile (a past round's): follow our own terms, watch
            out[key] = Election(False, by_key[key].anchor, by_key[key].stagger)
        else:
            out[key] = Election(False, row.anchor_at, timedelta(microseconds=row.stagger_us))
    return out


def _values(bid: Bid, leader: str, now: datetime) -> dict[str, object]:
    return {
        "class_key": bid.key,
        "leader": leader,
        "anchor_at": bid.anchor,
        "stagger_us": round(bid.stagger / timedelta(microseconds=1)),
        "elected_at": now,
    }


def _take_over(session: Session, bid: Bid, leader: str, now: datetime, stale: datetime) -> bool:
    takeover = (
        update(FireGroup)
        .where(FireGroup.class_key == bid.key, FireGroup.anchor_at < stale)
        .values(**_values(bid, leader, now))
        .returning(FireGroup.class_key)
    )
    return session.execute(takeover).first() is not None


def forget_groups(session: Session, before: datetime) -> int:
    """Delete group rows whose anchor is older than `before` (they only settled a past round)."""
    done = session.execute(delete(FireGroup).where(FireGroup.anchor_at < before))
    session.commit()
    return int(done.rowcount)  # type: ignore[attr-defined]


def beat(session: Session, token: str, now: datetime) -> None:
    """Say this process is alive (an upsert of its heartbeat row)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(DispatchProcess).values(token=token, seen_at=now)
    session.execute(insert.on_conflict_do_update(index_elements=["token"], set_={"seen_at": now}))
    session.commit()


def forget_processes(session: Session, before: datetime) -> int:
    """Delete heartbeats older than `before` (processes long gone)."""
    done = session.execute(delete(DispatchProcess).where(DispatchProcess.seen_at < before))
    session.commit()
    return int(done.rowcount)  # type: ignore[attr-defined]
