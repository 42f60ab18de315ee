"""Clocks: the system one with a precise sleep, and the protocol tests replace it with."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

# time.sleep() overshoots by up to a scheduler tick; sleep until this close, then poll finely.
_COARSE_MARGIN_S = 0.003
_FINE_STEP_S = 0.0002


class Clock(Protocol):
    """Where execution code gets `now` and waits for an instant."""

    def now(self) -> datetime: ...

    def sleep_until(self, at: datetime) -> None: ...


class SystemClock:
    """Wall-clock time; sleep_until() wakes within a fraction of a millisecond, never early."""

    realtime = True  # waits may use real-time timeouts (the firing line checks this)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep_until(self, at: datetime) -> None:
        target = at.timestamp()
        remaining = target - time.time()
        if remaining > _COARSE_MARGIN_S:
            time.sleep(remaining - _COARSE_MARGIN_S)
        while (left := target - time.time()) > 0:
            time.sleep(min(left, _FINE_STEP_S))


def lateness_ms(at: datetime, reference: datetime) -> float:
    """How late `at` is against `reference`, in milliseconds (negative = early)."""
    return (at - reference).total_seconds() * 1000.0
