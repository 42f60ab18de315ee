"""Prebooking persistence used by the API: create, page through, cancel, serialise."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from flask_app.api.schemas import ListQuery, PrebookingCreate
from flask_app.core.prebooking import Event, sources, transition
from flask_app.core.window import Window, WindowError, resolve
from flask_app.models import Prebooking, is_valid_id

# A window that opened this long ago is a mistake on the caller's side, not a prebooking.
MAX_PAST = timedelta(hours=24)
MAX_AHEAD = timedelta(days=400)


class NotFound(Exception):
    """No prebooking has that id."""


class Conflict(Exception):
    """The prebooking is in a state that forbids the request."""


class BadInput(ValueError):
    """Valid syntax, unusable value (explained in the message; `field` names it when known)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.problem = message


def to_json(row: Prebooking) -> dict[str, Any]:
    """The API representation of a prebooking."""
    return {
        "id": row.id,
        "status": row.status,
        "user_email": row.user_email,
        "booking_data": row.booking_data,
        "available_at": row.available_at.isoformat(),
        "qstash_message_id": row.qstash_message_id,
        "created_at": row.created_at.isoformat(),
        "executed_by": row.executed_by,
        "executed_at": row.executed_at.isoformat() if row.executed_at else None,
        "result": row.result,
        "error_message": row.error_message,
        "class_start": row.class_start.isoformat() if row.class_start else None,
        "box_timezone": row.box_timezone,
        "notify_url": row.notify_url,
        "session_checked_at": row.session_checked_at.isoformat()
        if row.session_checked_at
        else None,
    }


def window_of(body: PrebookingCreate, now: datetime) -> Window:
    """The prebooking's window: available_at as given, or computed from the class and rule.

    Raises:
        BadInput: naming the field (missing rule, class in the past, day mismatch, the window
        implausibly far in the past or future).
    """
    try:
        window = resolve(
            day=body.booking_data.day,
            now=now,
            available_at=body.available_at,
            class_start=body.class_start,
            zone=body.box_timezone,
            rule=body.rule,
        )
    except WindowError as exc:
        raise BadInput(exc.problem, exc.field) from None
    given = body.available_at is not None
    field, subject = (
        ("available_at", "is") if given else ("class_start", "gives a window that opens")
    )
    if window.available_at < now - MAX_PAST:
        raise BadInput(f"{subject} more than 24 hours in the past", field)
    if window.available_at > now + MAX_AHEAD:
        raise BadInput(f"{subject} more than 400 days ahead", field)
    return window


#: Called with the changed row inside its transaction, before the commit (see
#: events.prebooking_saving): what it adds to the session is committed with the change.
BeforeCommit = Callable[[Prebooking], None]


def _nothing(_row: Prebooking) -> None:
    return None


def create(
    session: Session, body: PrebookingCreate, now: datetime, before_commit: BeforeCommit = _nothing
) -> Prebooking:
    """Insert a pending prebooking (committed, with whatever `before_commit` added).

    Raises:
        BadInput: see window_of.
    """
    window = window_of(body, now)
    row = Prebooking(
        user_email=body.user_email,
        booking_data=body.booking_data.model_dump(),
        available_at=window.available_at,
        class_start=window.class_start,
        box_timezone=window.box_timezone,
        notify_url=body.notify_url,
        status="pending",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    before_commit(row)
    session.commit()
    return row


@dataclass(frozen=True)
class Page:
    items: list[Prebooking]
    next_cursor: str | None


def list_page(session: Session, query: ListQuery) -> Page:
    """A page in creation order (keyset pagination on created_at, id).

    Raises:
        BadInput: the cursor was not produced by this API.
    """
    stmt = select(Prebooking).order_by(Prebooking.created_at, Prebooking.id)
    if query.status is not None:
        stmt = stmt.where(Prebooking.status == query.status)
    if query.user_email is not None:
        stmt = stmt.where(Prebooking.user_email == query.user_email.lower())
    if query.cursor is not None:
        created_at, last_id = _decode_cursor(query.cursor)
        stmt = stmt.where(
            or_(
                Prebooking.created_at > created_at,
                and_(Prebooking.created_at == created_at, Prebooking.id > last_id),
            )
        )
    rows = list(session.scalars(stmt.limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = _encode_cursor(rows[-1]) if more and rows else None
    return Page(rows, cursor)


def _encode_cursor(row: Prebooking) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, last_id = json.loads(raw)
        return datetime.fromisoformat(created_at), str(last_id)
    except (binascii.Error, ValueError, TypeError):
        raise BadInput("cursor is not one this API returned") from None


def get(session: Session, prebooking_id: str) -> Prebooking:
    """One prebooking.

    Raises:
        NotFound: unknown id.
    """
    row = session.get(Prebooking, prebooking_id) if is_valid_id(prebooking_id) else None
    if row is None:
        raise NotFound(prebooking_id)
    return row


def cancel(
    session: Session, prebooking_id: str, now: datetime, before_commit: BeforeCommit = _nothing
) -> Prebooking:
    """Cancel a pending prebooking (conditional, so a concurrent claim wins cleanly), and
    commit it with whatever `before_commit` added.

    Raises:
        NotFound: unknown id.
        Conflict: already claimed, executed or cancelled.
    """
    get(session, prebooking_id)  # 404 before writing anything
    stmt = (
        update(Prebooking)
        .where(Prebooking.id == prebooking_id, Prebooking.status.in_(sources(Event.CANCEL)))
        .values(status=transition("pending", Event.CANCEL), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    changed = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    row = get(session, prebooking_id)
    session.refresh(row)
    if changed:
        before_commit(row)
    session.commit()
    if not changed:
        waiting = " or ".join(sorted(sources(Event.CANCEL)))
        raise Conflict(f"prebooking is {row.status}; only {waiting} prebookings can be cancelled")
    return row
