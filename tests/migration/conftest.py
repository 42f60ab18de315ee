"""Fixtures for the migration tests: a real qstash_dev server and the app pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import qstash
from sqlalchemy.orm import Session

from flask_app.db import get_db
from flask_app.models import Prebooking
from qstash_dev.testing import RunningServer, run_server
from tests.factories import booking_data

# Nothing listens here: messages in these tests are due hours ahead and are never delivered.
APP_BASE_URL = "http://127.0.0.1:9"


@pytest.fixture
def qstash_server() -> Iterator[RunningServer]:
    with run_server(retry_delay_scale=0.001) as srv:
        yield srv


@pytest.fixture
def app_overrides(qstash_server: RunningServer) -> dict[str, object]:
    return {
        "QSTASH_URL": qstash_server.url,
        "QSTASH_TOKEN": qstash_server.token,
        "QSTASH_ENABLED": True,
        "APP_BASE_URL": APP_BASE_URL,
    }


@pytest.fixture
def sdk(qstash_server: RunningServer) -> qstash.QStash:
    """The official SDK, to look at what the server holds."""
    return qstash.QStash(qstash_server.token, base_url=qstash_server.url)


@pytest.fixture
def session(app: Any) -> Iterator[Session]:
    with get_db(app).session() as s:
        yield s


def seed(
    session: Session, n: int, *, ahead: timedelta = timedelta(hours=2), **values: Any
) -> list[str]:
    """Insert n pending prebookings whose windows open `ahead` from now (1 s apart)."""
    now = datetime.now(UTC)
    rows = [
        Prebooking(
            user_email=values.get("user_email", f"user{i}@example.com"),
            booking_data=booking_data(),
            available_at=now + ahead + timedelta(seconds=i),
            status=values.get("status", "pending"),
            qstash_error=values.get("qstash_error"),
            created_at=now,
            updated_at=now,
        )
        for i in range(n)
    ]
    session.add_all(rows)
    session.commit()
    return [row.id for row in rows]


def rows_by_id(session: Session) -> dict[str, Prebooking]:
    """Every prebooking, fresh from the database."""
    session.expire_all()
    return {row.id: row for row in session.query(Prebooking)}
