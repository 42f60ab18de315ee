"""The shim's own tables (its result backend), on its own declarative metadata.

The app's Alembic environment migrates `metadata` beside its own, so the shim imports nothing
of the app: `task_results` (one row per task id: state, value and the run's lease),
`task_chords` (one row per chord: its size, members, body and the fan-in counter) and
`task_chord_parts` (one row per finished member, so a duplicate delivery never counts twice).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every backend (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current instant, aware UTC."""
    return datetime.now(UTC)


metadata = MetaData()


class Base(DeclarativeBase):
    """Declarative base of the shim's tables (not the app's)."""

    metadata = metadata


class TaskResult(Base):
    """State, value and lease of one task id (Celery's result backend row)."""

    __tablename__ = "task_results"

    task_id: Mapped[str] = mapped_column(String(155), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(50), default="PENDING")
    result: Mapped[str | None] = mapped_column(Text)  # Celery-JSON encoded value or exception
    traceback: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    args: Mapped[str | None] = mapped_column(Text)
    kwargs: Mapped[str | None] = mapped_column(Text)
    qstash_message_id: Mapped[str | None] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    date_done: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The run holding the task: who, until when (renewed while it runs), which attempt.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_attempt: Mapped[int | None] = mapped_column(Integer)
    # The newest attempt (Celery retry count) that ran to its end, whatever its outcome.
    attempt_done: Mapped[int | None] = mapped_column(Integer)


class TaskChord(Base):
    """One chord: header member ids in order, the body, and the fan-in counter."""

    __tablename__ = "task_chords"

    group_id: Mapped[str] = mapped_column(String(155), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    member_ids: Mapped[str] = mapped_column(Text)  # JSON list, header order
    body: Mapped[str] = mapped_column(Text)  # Celery-JSON of the body signature (frozen id)
    done: Mapped[int] = mapped_column(Integer, default=0)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class TaskChordPart(Base):
    """A header member that finished (counted once, whatever the deliveries)."""

    __tablename__ = "task_chord_parts"

    group_id: Mapped[str] = mapped_column(
        String(155), ForeignKey("task_chords.group_id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(String(155), primary_key=True)
