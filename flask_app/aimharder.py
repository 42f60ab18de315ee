"""PROVISIONAL: the booking result types only; the real client lands from the aimharder branch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class BookingOutcome(StrEnum):
    BOOKED = "booked"
    WAITLISTED = "waitlisted"
    ALREADY_BOOKED = "already_booked"
    TOO_EARLY = "too_early"
    FULL = "full"
    NO_CREDITS = "no_credits"
    LIMIT_REACHED = "limit_reached"
    SESSION_EXPIRED = "session_expired"
    REJECTED = "rejected"
    TRANSIENT = "transient"

    @property
    def is_success(self) -> bool:
        return self in (
            BookingOutcome.BOOKED,
            BookingOutcome.WAITLISTED,
            BookingOutcome.ALREADY_BOOKED,
        )

    @property
    def is_final(self) -> bool:
        return self is not BookingOutcome.TRANSIENT


@dataclass(frozen=True)
class BookingResult:
    outcome: BookingOutcome
    book_state: int | None
    reservation_id: str | None
    message: str | None
    error_key: str | None
    status_code: int | None
    request_sent: bool
    uncertain: bool
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    latency: timedelta = timedelta(0)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "bookState": self.book_state,
            "bookingId": self.reservation_id,
            "message": self.message,
        }
