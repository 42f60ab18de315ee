"""The result store: task states and values in the app's `task_results` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flask_app.db import get_db
from flask_app.models import TaskResult
from flask_app.shim import serialization, states
from flask_app.shim.exceptions import EncodeError


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
    )


def get(app: Flask, task_id: str) -> Meta | None:
    """The stored meta of a task id, or None if the store never heard of it."""
    with get_db(app).session() as session:
        row = session.get(TaskResult, task_id)
        return _to_meta(row) if row is not None else None


def _upsert(
    app: Flask, task_id: str, values: dict[str, Any], *, only_unready: bool = False
) -> bool:
    """Update the row (insert it if missing); with only_unready, never touch a ready state."""
    db = get_db(app)
    for _ in range(2):
        with db.session() as session:
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
    with get_db(app).session() as session:
        session.execute(delete(TaskResult).where(TaskResult.task_id == task_id))
        session.commit()


def exists(app: Flask, task_id: str) -> bool:
    """Whether a row exists for the id."""
    with get_db(app).session() as session:
        found = session.execute(select(TaskResult.task_id).where(TaskResult.task_id == task_id))
        return found.first() is not None
