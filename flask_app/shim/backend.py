"""The result store (the shim's tables): task states and values, run leases, chord counters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flask_app.shim import serialization, states
from flask_app.shim.binding import get_plugs
from flask_app.shim.exceptions import EncodeError
from flask_app.shim.models import TaskChord, TaskChordPart, TaskResult


@dataclass(frozen=True)
class Meta:
    """What the store knows about one task id."""

    task_id: str
    state: str
    result: Any
    traceback: str | None
    retries: int
    name: str | None
    revoked: bool
    message_id: str | None
    date_done: datetime | None
    args: Any
    kwargs: Any
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    lease_attempt: int | None = None
    attempt_done: int | None = None

    def is_leased(self, now: datetime) -> bool:
        """Whether a run holds the task now."""
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def is_done(self, attempt: int) -> bool:
        """Whether this attempt (or a newer one) already ran to its end."""
        return self.attempt_done is not None and self.attempt_done >= attempt


@contextmanager
def _session(app: Flask) -> Iterator[Session]:
    """A session on the database the app plugged in; closed on exit."""
    with get_plugs(app).sessions() as session:
        yield session


def _now() -> datetime:
    return datetime.now(UTC)


def encode_result(value: Any, state: str) -> str:
    """Celery-JSON text of a result (exceptions in Celery's stored form)."""
    if isinstance(value, BaseException):
        return serialization.dumps(serialization.exception_to_dict(value))
    try:
        return serialization.dumps(value)
    except EncodeError:
        if state in states.READY_STATES:
            raise
        return serialization.dumps(repr(value))


def decode_result(text: str | None, state: str) -> Any:
    """Inverse of encode_result."""
    if text is None:
        return None
    value = serialization.loads(text)
    if state in states.EXCEPTION_STATES and serialization.is_exception_dict(value):
        return serialization.exception_from_dict(value)
    return value


def _to_meta(row: TaskResult) -> Meta:
    return Meta(
        task_id=row.task_id,
        state=row.state,
        result=decode_result(row.result, row.state),
        traceback=row.traceback,
        retries=row.retries or 0,
        name=row.name,
        revoked=bool(row.revoked),
        message_id=row.qstash_message_id,
        date_done=row.date_done,
        args=serialization.loads(row.args) if row.args else None,
        kwargs=serialization.loads(row.kwargs) if row.kwargs else None,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        lease_attempt=row.lease_attempt,
        attempt_done=row.attempt_done,
    )


def get(app: Flask, task_id: str) -> Meta | None:
    """The stored meta of a task id, or None if the store never heard of it."""
    with _session(app) as session:
        row = session.get(TaskResult, task_id)
        return _to_meta(row) if row is not None else None


def _upsert(
    app: Flask, task_id: str, values: dict[str, Any], *, only_unready: bool = False
) -> bool:
    """Update the row (insert it if missing); with only_unready, never touch a ready state."""
    for _ in range(2):
        with _session(app) as session:
            if _update(session, task_id, values, only_unready):
                return True
            if session.get(TaskResult, task_id) is not None:
                return False  # exists but ready: left alone
            try:
                session.add(TaskResult(task_id=task_id, **values))
                session.commit()
                return True
            except IntegrityError:  # inserted meanwhile by another delivery: update it
                session.rollback()
    return False


def _update(session: Session, task_id: str, values: dict[str, Any], only_unready: bool) -> bool:
    stmt = update(TaskResult).where(TaskResult.task_id == task_id)
    if only_unready:
        stmt = stmt.where(TaskResult.state.not_in(list(states.READY_STATES)))
    count = session.execute(stmt.values(**values, updated_at=_now())).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(count)


def store_result(
    app: Flask,
    task_id: str,
    result: Any,
    state: str,
    *,
    traceback: str | None = None,
    name: str | None = None,
    retries: int | None = None,
    only_unready: bool = False,
) -> bool:
    """Store a state with its value (return value, exception or meta)."""
    values: dict[str, Any] = {
        "state": state,
        "result": encode_result(result, state),
        "traceback": traceback,
        "date_done": _now() if state in states.READY_STATES else None,
    }
    if name is not None:
        values["name"] = name
    if retries is not None:
        values["retries"] = retries
    return _upsert(app, task_id, values, only_unready=only_unready)


def mark_published(
    app: Flask, task_id: str, *, name: str, args: Any, kwargs: Any, retries: int
) -> None:
    """Record a sent message (state untouched; PENDING for a new id)."""
    values = {
        "name": name,
        "retries": retries,
        "args": serialization.dumps(args),
        "kwargs": serialization.dumps(kwargs),
    }
    _upsert(app, task_id, values)


def set_message_id(app: Flask, task_id: str, message_id: str) -> None:
    """Remember the QStash message that carries the task's next run (for revoke)."""
    _upsert(app, task_id, {"qstash_message_id": message_id})


def mark_revoked(app: Flask, task_id: str, reason: BaseException) -> str | None:
    """Tombstone: REVOKED for good; returns the pending QStash message id, if any."""
    meta = get(app, task_id)
    values = {
        "revoked": True,
        "state": states.REVOKED,
        "result": encode_result(reason, states.REVOKED),
        "date_done": _now(),
    }
    if meta is not None and meta.state in (states.SUCCESS, states.FAILURE):
        values = {"revoked": True}  # finished already: keep its outcome, as Celery does
    _upsert(app, task_id, values)
    return meta.message_id if meta is not None else None


def forget(app: Flask, task_id: str) -> None:
    """Delete what is stored about a task id."""
    with _session(app) as session:
        session.execute(delete(TaskResult).where(TaskResult.task_id == task_id))
        session.commit()


def exists(app: Flask, task_id: str) -> bool:
    """Whether a row exists for the id."""
    with _session(app) as session:
        found = session.execute(select(TaskResult.task_id).where(TaskResult.task_id == task_id))
        return found.first() is not None


# -- the run's lease: one delivery runs a task attempt; a crashed run's lease lapses ---------


def claim(
    app: Flask,
    task_id: str,
    *,
    attempt: int,
    owner: str,
    name: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Take the task's run for this attempt (one conditional UPDATE); False if another has it.

    It succeeds only when the task is not finished, revoked, stale (a newer attempt was sent)
    or already run for this attempt, and no live run holds it: a lease that lapsed (its run
    crashed) or one held by an older attempt (it has sent this retry) may be taken over.
    """
    values = {
        "lease_owner": owner,
        "lease_expires_at": now + lease,
        "lease_attempt": attempt,
        "retries": attempt,
        "name": name,
        "updated_at": now,
    }
    stmt = (
        update(TaskResult)
        .where(
            TaskResult.task_id == task_id,
            TaskResult.revoked.is_(False),
            TaskResult.state.not_in(list(states.READY_STATES)),
            TaskResult.retries <= attempt,
            or_(TaskResult.attempt_done.is_(None), TaskResult.attempt_done < attempt),
            or_(
                TaskResult.lease_expires_at.is_(None),
                TaskResult.lease_expires_at <= now,
                TaskResult.lease_attempt < attempt,
            ),
        )
        .values(**values)
    )
    for _ in range(2):
        with _session(app) as session:
            if session.execute(stmt).rowcount:  # type: ignore[attr-defined]
                session.commit()
                return True
            if session.get(TaskResult, task_id) is not None:
                return False
            try:  # never published through us (a schedule's firing): the first delivery inserts
                session.add(TaskResult(task_id=task_id, state=states.PENDING, **values))
                session.commit()
                return True
            except IntegrityError:
                session.rollback()
    return False


def renew(app: Flask, task_id: str, owner: str, until: datetime) -> bool:
    """Extend the lease while the run goes on; False if it was taken over."""
    with _session(app) as session:
        stmt = (
            update(TaskResult)
            .where(TaskResult.task_id == task_id, TaskResult.lease_owner == owner)
            .values(lease_expires_at=until)
        )
        count = session.execute(stmt).rowcount  # type: ignore[attr-defined]
        session.commit()
        return bool(count)


def release(app: Flask, task_id: str, owner: str, *, done_attempt: int | None) -> None:
    """End the run's lease; done_attempt marks the attempt as run (None: it may run again)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if done_attempt is not None:
        values["attempt_done"] = done_attempt
    with _session(app) as session:
        session.execute(
            update(TaskResult)
            .where(TaskResult.task_id == task_id, TaskResult.lease_owner == owner)
            .values(**values)
        )
        session.commit()


# -- chords: fan-in through a counter -------------------------------------------------------


@dataclass(frozen=True)
class Chord:
    """A chord row: its members in header order and its body (a signature dict)."""

    group_id: str
    size: int
    member_ids: list[str]
    body: dict[str, Any]
    done: int


def create_chord(app: Flask, group_id: str, *, member_ids: list[str], body: dict[str, Any]) -> None:
    """Record a chord before its header is sent (members finishing must find it)."""
    with _session(app) as session:
        session.add(
            TaskChord(
                group_id=group_id,
                size=len(member_ids),
                member_ids=json.dumps(member_ids),
                body=serialization.dumps(body),
                done=0,
            )
        )
        session.commit()


def count_chord_part(app: Flask, group_id: str, task_id: str) -> Chord | None:
    """Count a finished member once (a duplicate delivery counts nothing); None if no chord."""
    with _session(app) as session:
        try:
            session.add(TaskChordPart(group_id=group_id, task_id=task_id))
            session.flush()
        except IntegrityError:  # counted already (or the chord is gone)
            session.rollback()
        else:
            session.execute(
                update(TaskChord)
                .where(TaskChord.group_id == group_id)
                .values(done=TaskChord.done + 1)
            )
            session.commit()
        row = session.get(TaskChord, group_id)
        return _to_chord(row) if row is not None else None


def take_chord_firing(app: Flask, group_id: str, now: datetime) -> Chord | None:
    """The chord, if this caller is the one to fire its body (complete, not fired yet)."""
    with _session(app) as session:
        stmt = (
            update(TaskChord)
            .where(
                TaskChord.group_id == group_id,
                TaskChord.fired_at.is_(None),
                TaskChord.done >= TaskChord.size,
            )
            .values(fired_at=now)
        )
        if not session.execute(stmt).rowcount:  # type: ignore[attr-defined]
            return None
        session.commit()
        row = session.get(TaskChord, group_id)
        return _to_chord(row) if row is not None else None


def undo_chord_firing(app: Flask, group_id: str) -> None:
    """The body could not be sent: let the next delivery of a member try again."""
    with _session(app) as session:
        session.execute(
            update(TaskChord).where(TaskChord.group_id == group_id).values(fired_at=None)
        )
        session.commit()


def _to_chord(row: TaskChord) -> Chord:
    return Chord(
        group_id=row.group_id,
        size=row.size,
        member_ids=list(json.loads(row.member_ids)),
        body=serialization.loads(row.body),
        done=row.done,
    )


# -- expiry ---------------------------------------------------------------------------------


def cleanup(app: Flask, before: datetime) -> dict[str, int]:
    """Delete results that were ready before `before`, and chords sent before it."""
    with _session(app) as session:
        results = session.execute(
            delete(TaskResult).where(
                TaskResult.state.in_(list(states.READY_STATES)), TaskResult.date_done < before
            )
        ).rowcount  # type: ignore[attr-defined]
        old = select(TaskChord.group_id).where(TaskChord.created_at < before)
        session.execute(delete(TaskChordPart).where(TaskChordPart.group_id.in_(old)))
        chords = session.execute(delete(TaskChord).where(TaskChord.created_at < before)).rowcount  # type: ignore[attr-defined]
        session.commit()
        return {"results": int(results or 0), "chords": int(chords or 0)}
