"""A simulated parallel-phase run through the real execution core (fake AimHarder, fake clock).

Used by the browser test and by scripts/parity_screenshot.py to fill the parity page with
realistic data: QStash delivers about 1.5 s before each window opens (with jitter, a few late
deliveries, retries, duplicates and a couple that never come); cron ticks every 60 s.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from flask_app.aimharder.client import BookingOutcome
from flask_app.core.execution import Action, get_executor
from tests.factories import booking_data, make_prebooking, store_session
from tests.fakes import FakeBookingClient, FakeClock, result

USERS = ("ana@example.com", "bea@example.com", "carlos@example.com", "dani@example.com")


def simulate(
    app: Any, clock: FakeClock, client: FakeBookingClient, *, end: datetime, count: int, seed: int
) -> None:
    """Create `count` prebookings opening over the 20 h before `end`, and run both paths."""
    rng = random.Random(seed)
    with app.extensions["db"].session() as session:
        for email in USERS:
            store_session(app, session, email)
        for i in range(count):
            # class windows open at any second; cron ticks on the minute
            opening = end - timedelta(hours=20, minutes=-5 * i, seconds=-rng.randint(0, 59))
            row = make_prebooking(
                session,
                user_email=rng.choice(USERS),
                booking_data=booking_data(class_id=str(2000 + i)),
                available_at=opening,
                qstash_message_id=f"msg_{i:04d}",
            )
            _run(app, clock, client, row.id, opening, rng)
    clock.current = end


def _run(
    app: Any, clock: FakeClock, client: FakeBookingClient, pid: str, opening: datetime, rng: Any
) -> None:
    """Both paths' arrivals for one prebooking, in the order they arrive."""
    executor = get_executor(app)
    client.script = [_answer(rng)]
    if rng.random() < 0.06:  # a transient AimHarder failure: QStash retries 10 s later
        client.script.insert(0, _with_latency(result(BookingOutcome.TRANSIENT, sent=False), rng))
    pending = _arrivals(opening, rng)
    while pending:
        pending.sort(key=lambda a: a[0])
        at, path, retried = pending.pop(0)
        clock.current = at
        done = executor.attempt(
            pid, path=path, arrived_at=at, message_id=_msg(pid, path), retried=retried
        )
        if path == "qstash" and done.action is Action.RELEASED:
            # the webhook answered 5xx, so QStash retries (the first retry after about 10 s)
            pending.append((at + timedelta(seconds=10), "qstash", (retried or 0) + 1))


def _arrivals(opening: datetime, rng: Any) -> list[tuple[datetime, str, int | None]]:
    lead_ms = rng.gauss(-1500, 250)
    if rng.random() < 0.03:
        lead_ms = rng.uniform(150, 2500)  # a late delivery: cron may win this one
    cron_at = _next_tick(opening) + timedelta(milliseconds=rng.uniform(300, 2500))
    out: list[tuple[datetime, str, int | None]] = [(cron_at, "cron", None)]
    if rng.random() >= 0.02:  # about 2% of deliveries never come
        qstash_at = opening + timedelta(milliseconds=lead_ms)
        out.append((qstash_at, "qstash", 0))
        if rng.random() < 0.05:  # at-least-once: a duplicate delivery of the same message
            out.append((qstash_at + timedelta(milliseconds=rng.uniform(50, 900)), "qstash", 0))
    return out


def _next_tick(opening: datetime) -> datetime:
    floor = opening.replace(second=0, microsecond=0)
    return floor if floor >= opening else floor + timedelta(minutes=1)


def _msg(pid: str, path: str) -> str | None:
    return f"msg_{pid[:8]}" if path == "qstash" else None


def _answer(rng: Any) -> Any:
    roll = rng.random()
    outcome = BookingOutcome.BOOKED
    if roll > 0.95:
        outcome = BookingOutcome.FULL
    elif roll > 0.92:
        outcome = BookingOutcome.WAITLISTED
    return _with_latency(result(outcome), rng)


def _with_latency(answer: Any, rng: Any) -> Any:
    return replace(answer, latency=timedelta(milliseconds=rng.lognormvariate(5.0, 0.4)))
