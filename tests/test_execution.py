"""The execution core: claim once, book once, record the outcome; on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.core import events
from flask_app.core.execution import Action, claim, get_executor
from flask_app.models import Prebooking
from tests.factories import BOX_ID, booking_data, make_prebooking, reload, store_session
from tests.fakes import FakeClock, result

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=3))


@pytest.fixture
def app_overrides(clock):
    return {"CLOCK": clock}


@pytest.fixture
def due(app, session):
    store_session(app, session)
    return make_prebooking(session, available_at=NOW)


def test_winner_waits_for_the_opening_books_and_records(app, session, due, clock, booking_client):
    attempt = get_executor(app).attempt(due.id, path="qstash")
    assert attempt.action is Action.EXECUTED and attempt.won
    assert attempt.outcome is BookingOutcome.BOOKED
    assert clock.slept_until == [NOW]
    assert attempt.fired_at == NOW and attempt.fire_lateness_ms == 0
    assert booking_client.calls[0]["cookies"] == {"amhrdrauth": "token-ana@example.com"}
    row = reload(session, due)
    assert (row.status, row.executed_by) == ("completed", "qstash")
    assert row.result["outcome"] == "booked" and row.executed_at == NOW
    assert row.claimed_by is not None and row.book_sent_at is not None


def test_second_claimant_gets_already_taken_and_books_nothing(app, session, due, booking_client):
    executor = get_executor(app)
    first = executor.attempt(due.id, path="qstash")
    second = executor.attempt(due.id, path="cron")
    assert first.won and not second.won
    assert second.action is Action.LOST_CLAIM
    assert second.detail == {"executed_by": "qstash"}
    assert len(booking_client.calls) == 1


def test_claim_while_another_holds_a_live_lease_fails(app, session, due, clock):
    assert claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    assert (
        claim(session, due.id, path="qstash", now=clock.now(), lease=timedelta(seconds=60)) is None
    )


def test_lease_runs_from_the_opening_when_claimed_early(app, session, due, clock):
    held = claim(session, due.id, path="qstash", now=clock.now(), lease=timedelta(seconds=60))
    assert held is not None
    clock.current = NOW + timedelta(seconds=59)
    assert claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60)) is None
    clock.current = NOW + timedelta(seconds=61)
    assert claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (BookingOutcome.BOOKED, "completed"),
        (BookingOutcome.WAITLISTED, "completed"),
        (BookingOutcome.ALREADY_BOOKED, "completed"),
        (BookingOutcome.FULL, "failed"),
        (BookingOutcome.TOO_EARLY, "failed"),
        (BookingOutcome.NO_CREDITS, "failed"),
        (BookingOutcome.SESSION_EXPIRED, "failed"),
    ],
)
def test_final_outcomes_end_the_prebooking(app, session, due, booking_client, outcome, status):
    booking_client.default = result(outcome, message=f"answer {outcome}")
    attempt = get_executor(app).attempt(due.id, path="cron")
    assert attempt.action is Action.EXECUTED and attempt.status == status
    row = reload(session, due)
    assert row.status == status
    assert row.error_message == (None if status == "completed" else f"answer {outcome}")


def test_transient_failure_before_sending_releases_for_a_retry(app, session, due, booking_client):
    booking_client.script = [result(BookingOutcome.TRANSIENT, sent=False)]
    executor = get_executor(app)
    first = executor.attempt(due.id, path="qstash")
    assert first.action is Action.RELEASED
    row = reload(session, due)
    assert (row.status, row.book_sent_at, row.executed_by) == ("pending", None, None)
    retry = executor.attempt(due.id, path="qstash")
    assert retry.action is Action.EXECUTED
    assert booking_client.listing_calls == 0  # nothing was sent, so nothing to ask about


def test_uncertain_outcome_makes_the_next_claimant_ask_aimharder_first(
    app, session, due, booking_client
):
    booking_client.script = [result(BookingOutcome.TRANSIENT, sent=True, uncertain=True)]
    executor = get_executor(app)
    assert executor.attempt(due.id, path="qstash").action is Action.RELEASED
    assert reload(session, due).book_sent_at is not None
    booking_client.booked_listing = True
    again = executor.attempt(due.id, path="qstash")
    assert again.action is Action.CONFIRMED
    assert len(booking_client.calls) == 1  # the retry did not book again
    assert reload(session, due).result["outcome"] == "already_booked"


def test_crashed_claim_is_recovered_after_the_lease_without_double_booking(
    app, session, due, clock, booking_client
):
    # A worker claimed, marked the request as sent, and died.
    held = claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    session.query(Prebooking).filter_by(id=due.id).update({"book_sent_at": NOW})
    session.commit()
    assert held is not None
    clock.current = NOW + timedelta(seconds=61)
    booking_client.booked_listing = True
    recovered = get_executor(app).attempt(due.id, path="cron")
    assert recovered.action is Action.CONFIRMED
    assert booking_client.calls == []


def test_recovery_books_when_the_listing_shows_no_booking(app, session, due, clock, booking_client):
    claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    session.query(Prebooking).filter_by(id=due.id).update({"book_sent_at": NOW})
    session.commit()
    clock.current = NOW + timedelta(seconds=61)
    booking_client.booked_listing = False
    assert get_executor(app).attempt(due.id, path="qstash").action is Action.EXECUTED
    assert len(booking_client.calls) == 1


def test_recovery_without_box_id_says_the_check_was_impossible(app, session, clock, booking_client):
    store_session(app, session)
    data = booking_data()
    del data["box_id"]
    row = make_prebooking(session, available_at=NOW, booking_data=data)
    claim(session, row.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    session.query(Prebooking).filter_by(id=row.id).update({"book_sent_at": NOW})
    session.commit()
    clock.current = NOW + timedelta(seconds=61)
    booking_client.booked_listing = True  # it did book, but nobody can ask
    attempt = get_executor(app).attempt(row.id, path="qstash")
    assert attempt.action is Action.EXECUTED and len(booking_client.calls) == 1
    assert booking_client.listing_calls == 0
    assert attempt.detail["recovery_check"] == "impossible"
    stored = reload(session, row).result
    assert stored["recovery_check"] == "impossible"
    assert "box_id" in stored["recovery_note"]


def test_recovery_asks_the_listing_with_the_numeric_box_id(
    app, session, due, clock, booking_client
):
    claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    session.query(Prebooking).filter_by(id=due.id).update({"book_sent_at": NOW})
    session.commit()
    clock.current = NOW + timedelta(seconds=61)
    booking_client.booked_listing = True
    assert get_executor(app).attempt(due.id, path="qstash").action is Action.CONFIRMED
    assert booking_client.listing_params == [{"box": BOX_ID, "day": "20261130", "familyId": ""}]


def test_recovery_that_cannot_tell_sends_again_and_says_so(
    app, session, due, clock, booking_client
):
    claim(session, due.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    session.query(Prebooking).filter_by(id=due.id).update({"book_sent_at": NOW})
    session.commit()
    clock.current = NOW + timedelta(seconds=61)
    booking_client.booked_listing = None
    attempt = get_executor(app).attempt(due.id, path="qstash")
    assert attempt.action is Action.EXECUTED
    assert reload(session, due).result["recovery_check"] == "unknown"


def test_session_expired_prebooking_is_still_claimed_and_booked(app, session, booking_client):
    store_session(app, session)
    row = make_prebooking(session, available_at=NOW, status="session_expired")
    attempt = get_executor(app).attempt(row.id, path="qstash")
    assert attempt.action is Action.EXECUTED and attempt.status == "completed"
    assert len(booking_client.calls) == 1


def test_user_without_session_fails_without_calling_aimharder(app, session, booking_client):
    row = make_prebooking(session, user_email="nobody@example.com", available_at=NOW)
    attempt = get_executor(app).attempt(row.id, path="cron")
    assert attempt.action is Action.FAILED
    assert reload(session, row).error_message == "no AimHarder session stored for this user"
    assert booking_client.calls == []


def test_a_database_error_reading_the_session_releases_instead_of_failing(
    app, session, due, booking_client
):
    # Regression (reliability suite): "too many clients" while reading the cookies used to
    # fail the prebooking for good as "stored AimHarder session is unusable".
    from sqlalchemy.exc import OperationalError

    executor = get_executor(app)
    real = executor.load_cookies

    def flaky(db_session, email):
        raise OperationalError("SELECT", {}, Exception("sorry, too many clients already"))

    executor.load_cookies = flaky
    try:
        first = executor.attempt(due.id, path="qstash")
    finally:
        executor.load_cookies = real
    assert first.action is Action.RELEASED and first.detail["request_sent"] is False
    row = reload(session, due)
    assert (row.status, row.error_message, row.executed_by) == ("pending", None, None)
    assert booking_client.calls == []
    assert executor.attempt(due.id, path="qstash").action is Action.EXECUTED


def test_cancelled_and_unknown_prebookings_are_skipped(app, session, due, booking_client):
    due.status = "cancelled"
    session.commit()
    executor = get_executor(app)
    assert executor.attempt(due.id, path="qstash").action is Action.SKIPPED
    assert executor.attempt("missing", path="qstash").action is Action.NOT_FOUND
    assert booking_client.calls == []


def test_shadow_arrivals_are_observed_not_executed(app, session, due, booking_client):
    attempt = get_executor(app).observe(due.id, path="shadow")
    assert attempt.action is Action.SHADOW and attempt.lateness_ms == -3000
    assert reload(session, due).status == "pending"
    assert booking_client.calls == []


def test_every_arrival_is_announced_and_a_broken_observer_breaks_nothing(app, session, due):
    seen = []

    def observer(sender, attempt, app):
        seen.append((sender, attempt.action, app))

    def broken(sender, attempt, app):
        raise RuntimeError("observer bug")

    with (
        events.attempt_finished.connected_to(broken),
        events.attempt_finished.connected_to(observer),
    ):
        executor = get_executor(app)
        executor.attempt(due.id, path="qstash")
        executor.attempt(due.id, path="cron")
    assert seen == [("qstash", Action.EXECUTED, app), ("cron", Action.LOST_CLAIM, app)]


@pytest.mark.parametrize(
    "bad_id", ["", "nope", "\x00", "x" * 500, "00000000-0000-0000-0000-000000000000"]
)
def test_malformed_or_unknown_ids_are_not_found_without_touching_rows(app, session, due, bad_id):
    assert get_executor(app).attempt(bad_id, path="qstash").action is Action.NOT_FOUND
    assert get_executor(app).observe(bad_id, path="shadow").action is Action.NOT_FOUND
    assert reload(session, due).status == "pending"
