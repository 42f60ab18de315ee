"""Tables as typed SQLAlchemy 2 models: columns only, no I/O."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite drops tzinfo; PostgreSQL returns it in the session zone. Normalise once here.
    """

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
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current instant as an aware UTC datetime."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random UUID4 string, the primary key of prebookings and task results."""
    return str(uuid.uuid4())


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_valid_id(value: str) -> bool:
    """True for strings shaped like our ids; anything else cannot name a row."""
    return bool(_UUID.fullmatch(value))


def class_key(booking_data: dict[str, Any], available_at: datetime) -> str:
    """The class a prebooking competes in: box, class id, day and opening instant (UTC ms).

    Prebookings with the same key open together for the same places, so FIFO holds among them
    (docs/firing.md); order between different keys does not matter.
    """
    opening_ms = round(available_at.timestamp() * 1000)
    box, class_id, day = (str(booking_data.get(k, "")) for k in ("box", "class_id", "day"))
    return f"{box}/{class_id}/{day}/{opening_ms}"


def _class_key_default(context: DefaultExecutionContext) -> str:
    # Computed on insert from the row's own values, whoever inserts it (API, tests, tools).
    params = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return class_key(params.get("booking_data") or {}, params["available_at"])


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Prebooking(Base):
    """A user's request to book one class the moment its booking window opens."""

    __tablename__ = "prebookings"
    __table_args__ = (
        Index("ix_prebookings_status_available_at", "status", "available_at"),
        Index("ix_prebookings_created_at_id", "created_at", "id"),
        Index("ix_prebookings_class_key_status", "class_key", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_email: Mapped[str] = mapped_column(String(320), index=True)
    booking_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    loaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    # QStash path: the published message, or why publishing failed (then backfill/relay covers it).
    qstash_message_id: Mapped[str | None] = mapped_column(String(128), index=True)
    qstash_error: Mapped[str | None] = mapped_column(Text)
    # Bumped by a rollback or a re-publish after the DLQ, so the new message gets a fresh
    # deduplication id.
    qstash_generation: Mapped[int] = mapped_column(Integer, default=0)
    # Messages of this prebooking QStash gave up delivering (DLQ), and the last one's reason.
    qstash_dlq_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    qstash_dlq_reason: Mapped[str | None] = mapped_column(Text)
    # Execution core: who holds the claim, until when, and whether the booking request went out.
    executed_by: Mapped[str | None] = mapped_column(String(16))
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_count: Mapped[int] = mapped_column(Integer, default=0)
    book_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The class and the box's zone, when available_at was computed from them (core/window.py).
    class_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    box_timezone: Mapped[str | None] = mapped_column(String(64))
    # Where outcomes are announced (flask_app/notify.py); None: the user's session default, if any.
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    # When the pre-flight checked the stored session (core/preflight.py); None: not yet.
    session_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The class it competes in (class_key()): the dispatcher fires each class in FIFO order.
    class_key: Mapped[str] = mapped_column(String(160), default=_class_key_default)


@event.listens_for(Prebooking, "before_update")
def _class_key_follows(_mapper: Any, _connection: Any, target: Prebooking) -> None:
    # Keep the key right if a flush changes what it is made of (tools and tests do).
    target.class_key = class_key(target.booking_data or {}, target.available_at)


class FireGroup(Base):
    """One class's firing round: who leads it and the instant its rank 0 fires (dispatch.py).

    Won by a conditional insert, so one process per class writes every member in FIFO order;
    the others read the anchor and stagger to fire stragglers at the same rank-derived instants.
    """

    __tablename__ = "fire_groups"

    class_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    leader: Mapped[str] = mapped_column(String(128))
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    stagger_us: Mapped[int] = mapped_column(Integer)
    elected_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DispatchProcess(Base):
    """A process holding armed prebookings, and when it last said it is alive (a heartbeat a
    few times a second): a watchdog takes over only what a silent process holds."""

    __tablename__ = "dispatch_processes"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class UserSession(Base):
    """A user's AimHarder cookies, encrypted at rest (MultiFernet) and bound to the email."""

    __tablename__ = "user_sessions"

    user_email: Mapped[str] = mapped_column(String(320), primary_key=True)
    cookies_encrypted: Mapped[str] = mapped_column(Text)
    # The default notify_url of the user's prebookings that give none.
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Arrival(Base):
    """One arrival of one path (cron tick or QStash delivery) for one prebooking."""

    __tablename__ = "arrivals"
    __table_args__ = (Index("ix_arrivals_path_arrived_at", "path", "arrived_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prebooking_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("prebookings.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(16))  # cron | qstash | shadow
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lateness_ms: Mapped[float] = mapped_column(Float)
    won: Mapped[bool] = mapped_column(Boolean, default=False)
    action: Mapped[str] = mapped_column(
        String(32)
    )  # executed | lost_claim | skipped | shadow | ...
    outcome: Mapped[str | None] = mapped_column(String(32))
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fire_lateness_ms: Mapped[float | None] = mapped_column(Float)
    booking_latency_ms: Mapped[float | None] = mapped_column(Float)
    message_id: Mapped[str | None] = mapped_column(String(128))
    retried: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OutboxEntry(Base):
    """A QStash call owed for a prebooking (publish its message, or cancel it), written in
    the same transaction as the change that owes it; deleted once done (flask_app/qstash/outbox.py).
    """

    __tablename__ = "qstash_outbox"
    __table_args__ = (Index("ix_qstash_outbox_due_at", "gave_up_at", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prebooking_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("prebookings.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))  # publish | cancel | notify
    message_id: Mapped[str | None] = mapped_column(String(128))  # the message to cancel
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())  # next attempt no earlier than this
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    leased_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # attempts ran out


class JobLease(Base):
    """Who runs a once-across-instances background job until when (flask_app/background.py)."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[str | None] = mapped_column(String(64))  # what the holder did it for


class ApiToken(Base):
    """A scoped API token, stored as the SHA-256 of the token (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))  # admin | client
    # A client token bound to one user sees and changes only that user's data.
    user_email: Mapped[str | None] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token's first characters, so operators can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
