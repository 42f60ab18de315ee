"""Test doubles with the same methods as the real objects (nothing is monkey-patched)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_app.aimharder.client import BookingOutcome, BookingResult, ListingCheck, SessionState
from tests.factories import BOX_ID

BOOKED = BookingOutcome.BOOKED


def result(
    outcome: BookingOutcome = BOOKED,
    *,
    sent: bool = True,
    uncertain: bool = False,
    book_state: int | None = None,
    message: str | None = None,
) -> BookingResult:
    """A BookingResult as the real client would build it."""
    states = {BookingOutcome.BOOKED: 1, BookingOutcome.FULL: -1, BookingOutcome.TOO_EARLY: -12}
    return BookingResult(
        outcome=outcome,
        book_state=book_state if book_state is not None else states.get(outcome),
        reservation_id="R1" if outcome is BOOKED else None,
        message=message,
        error_key=None,
        status_code=200 if sent else None,
        request_sent=sent,
        uncertain=uncertain,
        sent_at=datetime.now(UTC),
        latency=timedelta(milliseconds=5),
        raw={},
    )


class FakeBookingClient:
    """Counts bookings per class; answers from a script or with `default`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.bookings: Counter[str] = Counter()
        self.script: list[BookingResult] = []
        self.default: BookingResult = result()
        self.booked_listing: bool | None = False
        self.listing_calls = 0
        self.listing_params: list[dict[str, str]] = []
        self.box_id = BOX_ID
        self.session_state = SessionState.ALIVE
        self.dead_cookies: set[str] = set()
        self.session_checks: list[dict[str, Any]] = []
        self.on_book: Callable[[dict[str, Any]], None] | None = None

    def book(
        self, *, box: str, class_id: str, day: str, family_id: str | None, cookies: dict[str, str]
    ) -> BookingResult:
        call = {
            "box": box,
            "class_id": class_id,
            "day": day,
            "family_id": family_id,
            "cookies": dict(cookies),
            "at": datetime.now(UTC),
        }
        if self.on_book is not None:
            self.on_book(call)
        with self.lock:
            self.calls.append(call)
            answer = self.script.pop(0) if self.script else self.default
            if answer.outcome is BOOKED:
                self.bookings[class_id] += 1
        return answer

    def check_booked(
        self,
        *,
        box: str,
        box_id: str | None,
        class_id: str,
        day: str,
        family_id: str | None,
        cookies: dict[str, str],
    ) -> ListingCheck:
        """The listing as AimHarder answers it: only for the box's numeric id (`self.box_id`)."""
        if not box_id:
            return ListingCheck.IMPOSSIBLE  # the real client asks nothing without one
        with self.lock:
            self.listing_calls += 1
            self.listing_params.append({"box": box_id, "day": day, "familyId": family_id or ""})
        if box_id != self.box_id or self.booked_listing is None:
            return ListingCheck.UNKNOWN  # another box's listing has no such row
        return ListingCheck.BOOKED if self.booked_listing else ListingCheck.NOT_BOOKED

    def check_session(
        self, *, box: str, box_id: str | None, day: str, cookies: dict[str, str]
    ) -> SessionState:
        """`session_state` for every session, unless `dead_cookies` names its amhrdrauth."""
        with self.lock:
            self.session_checks.append({"box": box, "box_id": box_id, "cookies": dict(cookies)})
        if cookies.get("amhrdrauth") in self.dead_cookies:
            return SessionState.DEAD
        return self.session_state


class FakeClock:
    """A clock tests move by hand; sleep_until() jumps to the instant."""

    def __init__(self, now: datetime) -> None:
        self.current = now
        self.slept_until: list[datetime] = []

    def now(self) -> datetime:
        return self.current

    def sleep_until(self, at: datetime) -> None:
        self.slept_until.append(at)
        self.current = max(self.current, at)

    def advance(self, delta: timedelta) -> None:
        self.current += delta
