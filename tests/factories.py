"""Plain functions that build rows for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from flask_app.core import sessions
from flask_app.models import Prebooking

#: The numeric box id test prebookings carry (the fake client expects it; so does the sandbox
#: when configured with `sandbox.set_box_id(BOX_ID)`).
BOX_ID = "10122"


def booking_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "box": "sandbox",
        "box_id": BOX_ID,
        "class_id": "1001",
        "day": "20261130",
        "family_id": None,
    }
    return data | overrides


def reload(session: Session, row: Prebooking | str) -> Prebooking | None:
    """The prebooking (a row or its id) as the database has it now."""
    session.expire_all()
    return session.get(Prebooking, row if isinstance(row, str) else row.id)


def make_prebooking(session: Session, **overrides: Any) -> Prebooking:
    """Insert and commit a pending prebooking due now unless told otherwise."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "user_email": "ana@example.com",
        "booking_data": booking_data(),
        "available_at": now - timedelta(seconds=1),
        "status": "pending",
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    row = Prebooking(**values)
    session.add(row)
    session.commit()
    return row


def store_session(
    app: Any,
    session: Session,
    email: str = "ana@example.com",
    cookies: dict[str, str] | None = None,
) -> None:
    """Store cookies for a user through the real encryption path."""
    sessions.store_cookies(
        session, sessions.get_cipher(app), email, cookies or {"amhrdrauth": "token-" + email}
    )
    session.commit()
