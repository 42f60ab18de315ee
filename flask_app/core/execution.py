"""The execution core both paths call: claim atomically, book once, record the outcome.

A claim is one conditional UPDATE ... RETURNING (pending, or loaded with an expired lease,
becomes loaded with our owner token), so two claimants can never both own a prebooking, on
SQLite or PostgreSQL. Every later write is conditional on still owning the claim.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, func, or_, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from flask_app.aimharder.client import (
    BookingOutcome,
    BookingResult,
    ListingCheck,
    PreparedBooking,
)
from flask_app.aimharder.firing import FiringLine
from flask_app.core import events
from flask_app.core.prebooking import Event, PrebookingStatus, sources, transition
from flask_app.models import DispatchProcess, Prebooking, UTCDateTime, is_valid_id
from flask_app.timing import Clock, lateness_ms

log = logging.getLogger(__name__)

CookieLoader = Callable[[Session, str], "dict[str, str] | None"]


class BookingClient(Protocol):
    """The part of AimHarderClient the core uses."""

    def book(
        self, *, box: str, class_id: str, day: str, family_id: str | None, cookies: dict[str, str]
    ) -> BookingResult: ...

    def check_booked(
        self,
        *,
        box: str,
        box_id: str | None,
        class_id: str,
        day: str,
        family_id: str | None,
        cookies: dict[str, str],
    ) -> ListingCheck: ...


class Action(StrEnum):
    """What one arrival ended up doing."""

    EXECUTED = "executed"  # claimed, sent the booking, recorded a final outcome
    CONFIRMED = "confirmed"  # recovered claim; AimHarder's listing showed it already booked
    RELEASED = "released"  # claimed, hit a transient failure, handed back for a retry
    FAILED = "failed"  # claimed, could not be executed (no session stored, bad session row)
    LOST_CLAIM = "lost_claim"  # the other path or another worker holds or finished it
    SKIPPED = "skipped"  # cancelled or already terminal when it arrived
    NOT_FOUND = "not_found"
    SHADOW = "shadow"  # observed only (QSTASH_SHADOW)


@dataclass(frozen=True)
class Claimed:
    """A claim we hold: a snapshot of the row as the UPDATE left it.

    `owner` is the holding process's token and `generation` the row's claim count after this
    claim: together they name this one claim, so a later claim of the same row (even by the
    same process) makes every write of this one fail.
    """

    id: str
    owner: str
    user_email: str
    booking_data: dict[str, Any]
    available_at: datetime
    book_sent_at: datetime | None  # set: a previous owner may already have reached AimHarder
    generation: int = 0
    class_key: str = ""
    created_at: datetime | None = None
    path: str = ""
    loaded_at: datetime | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class Attempt:
    """Everything about one arrival, for the comparison module, metrics and responses."""

    prebooking_id: str
    path: str
    arrived_at: datetime
    action: Action
    available_at: datetime | None = None
    won: bool = False
    status: str | None = None
    outcome: BookingOutcome | None = None
    fired_at: datetime | None = None
    booking_latency: timedelta | None = None
    message_id: str | None = None
    retried: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def lateness_ms(self) -> float | None:
        """Arrival against the window opening (negative: arrived before it, as QStash should)."""
        if self.available_at is None:
            return None
        return lateness_ms(self.arrived_at, self.available_at)

    @property
    def fire_lateness_ms(self) -> float | None:
        """When the booking request left against the window opening."""
        if self.fired_at is None or self.available_at is None:
            return None
        return lateness_ms(self.fired_at, self.available_at)


_TOKEN: tuple[int, str] | None = None


def process_token() -> str:
    """This process's claim token (host, pid and a random part, renewed after a fork)."""
    global _TOKEN
    pid = os.getpid()
    if _TOKEN is None or _TOKEN[0] != pid:
        _TOKEN = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}")
    return _TOKEN[1]


#: The columns every claiming statement returns (one Claimed each).
_RETURNED = (
    Prebooking.id,
    Prebooking.claimed_by,
    Prebooking.user_email,
    Prebooking.booking_data,
    Prebooking.available_at,
    Prebooking.book_sent_at,
    Prebooking.claim_count,
    Prebooking.class_key,
    Prebooking.created_at,
    Prebooking.executed_by,
    Prebooking.loaded_at,
    Prebooking.qstash_message_id,
)


def _claimed(row: Any) -> Claimed:
    return Claimed(
        row.id,
        row.claimed_by,
        row.user_email,
        row.booking_data,
        row.available_at,
        row.book_sent_at,
        row.claim_count,
        row.class_key,
        row.created_at,
        row.executed_by or "",
        row.loaded_at,
        row.qstash_message_id,
    )


def claimable(now: datetime) -> Any:
    """Rows a claim may take: pending (or any status CLAIM starts from), or loaded with an
    expired lease (its owner died)."""
    return or_(
        Prebooking.status.in_(sources(Event.CLAIM)),
        and_(Prebooking.status == PrebookingStatus.LOADED, Prebooking.claim_expires_at < now),
    )


def claim(
    session: Session,
    prebooking_id: str,
    *,
    path: str,
    now: datetime,
    lease: timedelta,
    opening: datetime | None = None,
    owner: str | None = None,
) -> Claimed | None:
    """Take a prebooking for execution, atomically; None if someone else has or had it.

    The lease runs from the later of now and the window opening, so a claimant that waits for
    the opening instant is not mistaken for a crashed one. `opening`: the window opening as
    the caller knows it (a delivery's scheduledAt, a selected row's available_at); with it the
    claim is one statement, without it the opening is read first. `owner`: the claimant's token
    (default: this process's).
    """
    if opening is None:
        opening = _opening(session, prebooking_id)
    params = {
        "pid": prebooking_id,
        "now": now,
        "owner": owner or process_token(),
        "lease_end": max(now, opening or now) + lease,
        "path": path,
    }
    row = session.execute(_claim_statement(), params).first()
    session.commit()
    return None if row is None else _claimed(row)


@functools.cache
def _claim_statement() -> Any:
    """The claim, built once: every admission runs it, and building a statement costs more CPU
    than executing it (bench/README.md, "Webhook throughput"). Core, not ORM: no unit of work
    is involved, and the ORM's bulk-update bookkeeping would cost as much again."""
    table = Prebooking.__table__
    assert isinstance(table, Table)
    col = table.c
    now = bindparam("now", type_=UTCDateTime())
    claimable = or_(
        # pending, or session_expired: at the instant we still try (the user may have re-logged)
        col.status.in_(sorted(sources(Event.CLAIM))),
        and_(col.status == PrebookingStatus.LOADED, col.claim_expires_at < now),
    )
    return (
        update(table)
        .where(col.id == bindparam("pid"), claimable)
        .values(
            status=transition(PrebookingStatus.PENDING, Event.CLAIM),
            loaded_at=now,
            claimed_by=bindparam("owner"),
            claim_expires_at=bindparam("lease_end", type_=UTCDateTime()),
            executed_by=bindparam("path"),
            claim_count=col.claim_count + 1,
            updated_at=now,
        )
        .returning(*(col[c.key] for c in _RETURNED))
    )


def _opening(session: Session, prebooking_id: str) -> datetime | None:
    opening = select(Prebooking.available_at).where(Prebooking.id == prebooking_id)
    found: datetime | None = session.execute(opening).scalar()
    return found


def adopt(
    session: Session, class_key: str, now: datetime, owner: str | None = None
) -> list[Claimed]:
    """Take over every claimed, unsent member of a class, from whichever process holds it.

    The class's leader does this shortly before the instant, so it alone writes the whole
    class in FIFO order. A member whose request may already have left (`book_sent_at`) stays
    with its holder, which asks AimHarder before sending again.
    """
    return adopt_many(session, [class_key], now, owner).get(class_key, [])


def adopt_many(
    session: Session,
    class_keys: Sequence[str],
    now: datetime,
    owner: str | None = None,
    *,
    silent_since: datetime | None = None,
) -> dict[str, list[Claimed]]:
    """`adopt` for several classes in one statement (a process leading many at one instant).

    silent_since: take only members whose holder has not beaten its heartbeat since then
    (`DispatchProcess`): a watchdog rescues a dead process's members, never a slow one's.
    """
    if not class_keys:
        return {}
    taken = _unsent_members(class_keys)
    if silent_since is not None:
        alive = select(DispatchProcess.token).where(DispatchProcess.seen_at >= silent_since)
        taken = and_(taken, Prebooking.claimed_by.not_in(alive))
    stmt = (
        update(Prebooking)
        .where(taken)
        .values(claimed_by=owner or process_token(), updated_at=now)
        .returning(*_RETURNED)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    session.commit()
    found: dict[str, list[Claimed]] = {}
    for row in rows:
        found.setdefault(row.class_key, []).append(_claimed(row))
    return found


def unsent_counts(session: Session, class_keys: Sequence[str]) -> dict[str, int]:
    """How many claimed members of each class have not been sent yet (classes with none are
    left out): a watchdog keeps watching those."""
    if not class_keys:
        return {}
    stmt = (
        select(Prebooking.class_key, func.count())
        .where(_unsent_members(class_keys))
        .group_by(Prebooking.class_key)
    )
    return {key: int(n) for key, n in session.execute(stmt)}


def _unsent_members(class_keys: Sequence[str]) -> Any:
    return and_(
        Prebooking.class_key.in_(list(class_keys)),
        Prebooking.status == PrebookingStatus.LOADED,
        Prebooking.book_sent_at.is_(None),
    )


def mark_sent_many(
    session: Session, claims: Sequence[Claimed], now: datetime, owner: str | None = None
) -> set[str]:
    """Note, in one statement, that these requests are about to leave; the ids still ours.

    A claim another process adopted (or a later claim replaced) is left out: its request must
    not leave from here.
    """
    if not claims:
        return set()
    owned = tuple_(Prebooking.id, Prebooking.claim_count).in_(
        [(c.id, c.generation) for c in claims]
    )
    stmt = (
        update(Prebooking)
        .where(
            owned,
            Prebooking.claimed_by == (owner or process_token()),
            Prebooking.status == PrebookingStatus.LOADED,
        )
        .values(book_sent_at=now)
        .returning(Prebooking.id)
        .execution_options(synchronize_session=False)
    )
    ids = set(session.execute(stmt).scalars())
    session.commit()
    return ids


def class_ranks(session: Session, class_key: str) -> dict[str, int]:
    """Every member's FIFO rank in its class by (created_at, id), whatever its status, so a
    rank never changes while the class fires and every process computes the same one."""
    return class_ranks_many(session, [class_key])


def class_ranks_many(session: Session, class_keys: Sequence[str]) -> dict[str, int]:
    """`class_ranks` for several classes in one window query (ids are unique across them)."""
    if not class_keys:
        return {}
    order = (Prebooking.created_at, Prebooking.id)
    rank = func.row_number().over(partition_by=Prebooking.class_key, order_by=order) - 1
    stmt = select(Prebooking.id, rank).where(
        Prebooking.class_key.in_(list(class_keys)),
        Prebooking.status.in_(list(PrebookingStatus)),
    )
    return {pid: int(found) for pid, found in session.execute(stmt)}


def _owned(claimed: Claimed) -> Any:
    return and_(
        Prebooking.id == claimed.id,
        Prebooking.claimed_by == claimed.owner,
        Prebooking.claim_count == claimed.generation,
        Prebooking.status == PrebookingStatus.LOADED,
    )


def _write_if_owned(session: Session, claimed: Claimed, **values: Any) -> bool:
    stmt = update(Prebooking).where(_owned(claimed)).values(**values)
    done = session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


def finish(
    session: Session,
    claimed: Claimed,
    result: BookingResult,
    now: datetime,
    note: dict[str, Any] | None = None,
) -> bool:
    """Record a final outcome; False if the claim was lost meanwhile (nothing written).

    note: extra keys for the stored result (e.g. what the recovery's listing check said).
    """
    event = Event.COMPLETE if result.outcome.is_success else Event.FAIL
    payload = result.to_json() | (note or {}) | {"executedAt": now.isoformat()}
    return _write_if_owned(
        session,
        claimed,
        status=transition(PrebookingStatus.LOADED, event),
        executed_at=now,
        result=payload,
        error_message=None if result.outcome.is_success else (result.message or result.outcome),
        claim_expires_at=None,
        updated_at=now,
    )


def fail(session: Session, claimed: Claimed, reason: str, now: datetime) -> bool:
    """Record a failure that happened before anything was sent."""
    return _write_if_owned(
        session,
        claimed,
        status=transition(PrebookingStatus.LOADED, Event.FAIL),
        executed_at=now,
        result={"success": False, "outcome": "not_executed", "message": reason},
        error_message=reason,
        claim_expires_at=None,
        updated_at=now,
    )


def release(
    session: Session,
    claimed: Claimed,
    *,
    keep_sent_mark: bool,
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Give the prebooking back as pending, so a retry or the other path can take it.

    reason: why (kept in `error_message`, so a prebooking given up after its last retry says
    what kept failing).
    """
    values: dict[str, Any] = {
        "status": transition(PrebookingStatus.LOADED, Event.RELEASE),
        "claimed_by": None,
        "claim_expires_at": None,
        "executed_by": None,
        "updated_at": now,
    }
    if reason is not None:
        values["error_message"] = reason[:2000]
    if not keep_sent_mark:
        values["book_sent_at"] = None
    return _write_if_owned(session, claimed, **values)


def mark_sent(session: Session, claimed: Claimed, now: datetime) -> bool:
    """Note that the booking request is about to leave (recovery must then ask AimHarder)."""
    return _write_if_owned(session, claimed, book_sent_at=now)


def abandon(session: Session, prebooking_id: str, reason: str, now: datetime) -> bool:
    """Fail a pending prebooking without executing it (e.g. its delivery died in the DLQ)."""
    stmt = (
        update(Prebooking)
        .where(Prebooking.id == prebooking_id, Prebooking.status.in_(sources(Event.ABANDON)))
        .values(
            status=transition(PrebookingStatus.PENDING, Event.ABANDON),
            executed_at=now,
            error_message=reason,
            result={"success": False, "outcome": "not_executed", "message": reason},
            updated_at=now,
        )
    )
    done = session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


def give_up(session: Session, prebooking_id: str, reason: str, now: datetime) -> bool:
    """Fail a prebooking that was claimed too many times without an outcome: pending (released
    after transient failures) or held by a claim whose owner died (its lease ran out)."""
    stmt = (
        update(Prebooking)
        .where(Prebooking.id == prebooking_id, claimable(now))
        .values(
            status=PrebookingStatus.FAILED,
            executed_at=now,
            error_message=reason,
            result={"success": False, "outcome": "not_executed", "message": reason},
            claimed_by=None,
            claim_expires_at=None,
            updated_at=now,
        )
    )
    done = session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


@dataclass
class Executor:
    """Runs arrivals through claim → (recover) → wait → book → record, and reports each."""

    sessions: sessionmaker[Session]
    client: BookingClient
    load_cookies: CookieLoader
    clock: Clock
    lease: timedelta = timedelta(seconds=60)
    app: Any = None  # the Flask app it serves, passed to observers with every announcement
    line: FiringLine | None = None  # fire prepared requests from one thread (see firing.py)

    def attempt(
        self,
        prebooking_id: str,
        *,
        path: str,
        arrived_at: datetime | None = None,
        fire_at: datetime | None = None,
        message_id: str | None = None,
        retried: int | None = None,
        settle_at: datetime | None = None,
    ) -> Attempt:
        """Handle one arrival of `path`; books only if this arrival wins the claim.

        fire_at: when to send the booking request (never before the window opens).
        settle_at: record the outcome no earlier than this, so the database writes of a burst
        of bookings opening together do not delay the ones still to fire.
        """
        base = self._arrival(prebooking_id, path, arrived_at, message_id, retried)
        if not is_valid_id(prebooking_id):
            self._announce(base)
            return base
        with self.sessions() as session:
            now = self.clock.now()
            claimed = claim(session, prebooking_id, path=path, now=now, lease=self.lease)
            if claimed is None:
                attempt = self._why_not(session, base)
            else:
                won = replace(base, available_at=claimed.available_at, won=True)
                attempt = self._execute(session, claimed, won, fire_at, settle_at)
        self._announce(attempt)
        return attempt

    def observe(
        self,
        prebooking_id: str,
        *,
        path: str,
        arrived_at: datetime | None = None,
        message_id: str | None = None,
        retried: int | None = None,
    ) -> Attempt:
        """Record an arrival that must not execute (shadow mode)."""
        base = self._arrival(prebooking_id, path, arrived_at, message_id, retried)
        with self.sessions() as session:
            row = session.get(Prebooking, prebooking_id) if is_valid_id(prebooking_id) else None
        if row is not None:
            base = replace(
                base, action=Action.SHADOW, available_at=row.available_at, status=row.status
            )
        self._announce(base)
        return base

    def _arrival(
        self,
        prebooking_id: str,
        path: str,
        arrived_at: datetime | None,
        message_id: str | None,
        retried: int | None,
    ) -> Attempt:
        """An arrival before anything is known of its prebooking (NOT_FOUND until found)."""
        return Attempt(
            prebooking_id,
            path,
            arrived_at or self.clock.now(),
            Action.NOT_FOUND,
            message_id=message_id,
            retried=retried,
        )

    def announce(self, attempt: Attempt) -> None:
        """Tell every observer of the attempt's path about it (never raises)."""
        self._announce(attempt)

    def _announce(self, attempt: Attempt) -> None:
        # Observers must never break an execution: blinker would propagate their exceptions.
        for receiver in events.attempt_finished.receivers_for(attempt.path):
            try:
                receiver(attempt.path, attempt=attempt, app=self.app)
            except Exception:
                log.exception("attempt_finished receiver %r failed", receiver)

    def why_not(self, session: Session, base: Attempt) -> Attempt:
        """The arrival that found its prebooking claimed, finished, cancelled or gone."""
        return self._why_not(session, base)

    def _why_not(self, session: Session, base: Attempt) -> Attempt:
        row = session.get(Prebooking, base.prebooking_id)
        if row is None:
            return base
        action = Action.SKIPPED if row.status == PrebookingStatus.CANCELLED else Action.LOST_CLAIM
        return replace(
            base,
            action=action,
            available_at=row.available_at,
            status=row.status,
            detail={"executed_by": row.executed_by},
        )

    def _execute(
        self,
        session: Session,
        claimed: Claimed,
        won: Attempt,
        fire_at: datetime | None,
        settle_at: datetime | None = None,
    ) -> Attempt:
        try:
            cookies = self.load_cookies(session, claimed.user_email)
        except SQLAlchemyError as exc:  # the database, not the row: hand it back for a retry
            return self._release_unsent(session, claimed, won, exc)
        except Exception as exc:  # a tampered or undecryptable row: fail it, say why
            log.warning("session of prebooking %s unusable: %s", claimed.id, exc)
            cookies, reason = None, f"stored AimHarder session is unusable: {exc}"
        else:
            reason = "no AimHarder session stored for this user"
        if cookies is None:
            fail(session, claimed, reason, self.clock.now())
            return replace(
                won, action=Action.FAILED, status=PrebookingStatus.FAILED, detail={"reason": reason}
            )
        form = _form(claimed.booking_data)
        note: dict[str, Any] = {}
        if claimed.book_sent_at is not None:
            box_id = claimed.booking_data.get("box_id")
            check = self.client.check_booked(**form, box_id=box_id, cookies=cookies)
            if check is ListingCheck.BOOKED:
                return self._confirmed(session, claimed, won)
            note = recovery_note(claimed.id, check)
        if not mark_sent(session, claimed, self.clock.now()):
            return replace(won, action=Action.LOST_CLAIM, detail={"lease": "lost"})
        fire = max(claimed.available_at, fire_at or claimed.available_at)
        result, fired_at = self._book_at(fire, form, cookies)
        if settle_at is not None and settle_at > self.clock.now():
            self.clock.sleep_until(settle_at)
        return self._record(session, claimed, won, result, fired_at, note)

    def _book_at(
        self, fire: datetime, form: dict[str, Any], cookies: dict[str, str]
    ) -> tuple[BookingResult, datetime]:
        """Book at `fire` through the firing line when the request could be prepared, else
        through `client.book()`; the result and when the request left."""
        prepared = self._prepare(form, cookies)
        if prepared is not None and self.line is not None:
            self.line.fire(prepared, fire)
            result = prepared.result()  # None: not a byte left (e.g. the connection dropped)
            if result is not None:
                return result, result.sent_at
            log.info("prepared booking not sent (connection dropped); booking via httpx")
        self.clock.sleep_until(fire)
        fired_at = self.clock.now()
        return self.client.book(**form, cookies=cookies), fired_at

    def _prepare(self, form: dict[str, Any], cookies: dict[str, str]) -> PreparedBooking | None:
        prepare = getattr(self.client, "prepare", None) if self.line is not None else None
        if prepare is None:
            return None
        try:
            prepared: PreparedBooking | None = prepare(**form, cookies=cookies)
        except Exception:  # preparing is an optimisation: any trouble means the plain path
            log.exception("preparing the booking request failed; booking via httpx")
            return None
        return prepared

    def _release_unsent(
        self, session: Session, claimed: Claimed, won: Attempt, exc: SQLAlchemyError
    ) -> Attempt:
        """Give back a claim whose execution hit a database error before anything was sent.

        If the release cannot be written either, the lease expires and recovery takes it.
        """
        log.warning("prebooking %s: database error before sending: %s", claimed.id, exc)
        session.rollback()
        try:
            release(session, claimed, keep_sent_mark=True, now=self.clock.now())
        except SQLAlchemyError:
            session.rollback()
        message = f"database unavailable before sending: {type(exc).__name__}"
        return replace(
            won,
            action=Action.RELEASED,
            status=PrebookingStatus.PENDING,
            detail={"request_sent": False, "uncertain": False, "message": message},
        )

    def _confirmed(self, session: Session, claimed: Claimed, won: Attempt) -> Attempt:
        result = confirmed_result(self.clock.now())
        finish(session, claimed, result, self.clock.now())
        return replace(
            won, action=Action.CONFIRMED, status=PrebookingStatus.COMPLETED, outcome=result.outcome
        )

    def _record(
        self,
        session: Session,
        claimed: Claimed,
        won: Attempt,
        result: BookingResult,
        fired_at: datetime,
        note: dict[str, Any] | None = None,
    ) -> Attempt:
        return record(session, claimed, won, result, fired_at, self.clock.now(), note=note)


def record(
    session: Session,
    claimed: Claimed,
    won: Attempt,
    result: BookingResult,
    fired_at: datetime,
    now: datetime,
    detail: dict[str, Any] | None = None,
    note: dict[str, Any] | None = None,
) -> Attempt:
    """Write what a booking request came to (final: finish; transient: release for a retry)
    and describe it as the arrival's Attempt.

    note: what the recovery's listing check said (stored with the result and in the detail).
    """
    timed = replace(won, outcome=result.outcome, fired_at=fired_at, booking_latency=result.latency)
    extra = (detail or {}) | (note or {})
    if result.outcome.is_final:
        kept = finish(session, claimed, result, now, note)
        event = Event.COMPLETE if result.outcome.is_success else Event.FAIL
        return replace(
            timed,
            action=Action.EXECUTED,
            status=transition(PrebookingStatus.LOADED, event),
            detail=extra if kept else extra | {"lease": "lost while booking"},
        )
    release(session, claimed, keep_sent_mark=result.request_sent, now=now, reason=result.message)
    return replace(
        timed,
        action=Action.RELEASED,
        status=PrebookingStatus.PENDING,
        detail=extra
        | {
            "request_sent": result.request_sent,
            "uncertain": result.uncertain,
            "message": result.message,
        },
    )


def confirmed_result(now: datetime) -> BookingResult:
    """The result recorded when AimHarder's listing shows the class already booked."""
    return BookingResult(
        BookingOutcome.ALREADY_BOOKED,
        None,
        None,
        "already booked (confirmed from the class listing)",
        None,
        None,
        request_sent=False,
        uncertain=False,
        sent_at=now,
        latency=timedelta(0),
        raw={},
    )


def recovery_note(prebooking_id: str, check: ListingCheck) -> dict[str, Any]:
    """What to record when a previous owner may have sent the booking and the listing did not
    confirm it: the booking is sent again (AimHarder refuses a double booking with
    NOPUEDESRESERVAMISMAHORA, which counts as booked), but not silently."""
    if check is ListingCheck.NOT_BOOKED:
        return {"recovery_check": check.value}
    why = (
        "no booking_data.box_id, so AimHarder's listing could not be asked"
        if check is ListingCheck.IMPOSSIBLE
        else "AimHarder's listing could not tell"
    )
    log.warning("prebooking %s: recovery check %s (%s); sending again", prebooking_id, check, why)
    return {
        "recovery_check": check.value,
        "recovery_note": f"a previous attempt may have reached AimHarder; {why}; sent again",
    }


def _form(booking_data: dict[str, Any]) -> dict[str, Any]:
    return {
        "box": booking_data["box"],
        "class_id": booking_data["class_id"],
        "day": booking_data["day"],
        "family_id": booking_data.get("family_id"),
    }


_EXT = "executor"


def init_app(app: Any) -> None:
    """Build the app's Executor: its DB, the AimHarder client, the cookie store and a clock.

    Tests may hand in AIMHARDER_CLIENT and CLOCK through the config.
    """
    from flask_app.core import sessions
    from flask_app.db import get_db
    from flask_app.timing import SystemClock

    client = app.config.get("AIMHARDER_CLIENT")
    if client is None:
        from flask_app.aimharder.client import AimHarderClient

        client = AimHarderClient(
            app.config.get("AIMHARDER_BASE_URL"), timeout=app.config["AIMHARDER_TIMEOUT_S"]
        )

    def load_cookies(session: Session, email: str) -> dict[str, str] | None:
        return sessions.load_cookies(session, sessions.get_cipher(app), email)

    clock = app.config.get("CLOCK") or SystemClock()
    app.extensions[_EXT] = Executor(
        sessions=get_db(app).sessions,
        client=client,
        load_cookies=load_cookies,
        clock=clock,
        lease=timedelta(seconds=app.config["CLAIM_LEASE_SECONDS"]),
        app=app,
        line=FiringLine(clock) if app.config.get("AIMHARDER_FIRING_LINE", True) else None,
    )


def get_executor(app: Any = None) -> Executor:
    """The app's Executor (the current app's when none is given)."""
    from flask import current_app

    executor: Executor = (app or current_app).extensions[_EXT]
    return executor
