"""The sweep, the executor of last resort: what it takes, what it leaves, and its bound.

On a test clock: the background runner's pass is run by hand (`run_once`), the dispatcher's
steps by `drain()`. Cron is off unless a test says otherwise.
"""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.background import get_runner
from flask_app.core import events
from flask_app.core.dispatch import get_dispatcher
from flask_app.core.execution import claim
from flask_app.core.sweep import Candidate, SweepSettings, Why, overdue_after, why_swept
from tests.factories import make_prebooking, reload, store_session
from tests.fake_gateway import FakeGateway
from tests.fakes import FakeClock, result

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)  # the API takes it
S = timedelta(seconds=1)


@pytest.fixture
def clock():
    return FakeClock(NOW - 60 * S)


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(clock, gateway):
    return {
        "CLOCK": clock,
        "GYM_CLOCK_MARGIN_MS": 0.0,  # fire at the opening by the test clock
        "QSTASH_GATEWAY": gateway,
        "QSTASH_ENABLED": True,
        "LEGACY_CRON_ENABLED": False,
        "APP_BASE_URL": "https://prebook.example.com",
    }


@pytest.fixture
def announced():
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        yield seen


def sweep_at(app, clock, at):
    """Move the clock, run one pass of the runner's jobs, let the dispatcher fire."""
    clock.current = at
    ran = get_runner(app).run_once(at)["dispatch-sweep"]
    get_dispatcher(app).drain()
    return ran


def row(**overrides):
    values = {
        "id": "p",
        "status": "pending",
        "user_email": "ana@example.com",
        "available_at": NOW,
        "claim_expires_at": None,
        "claim_count": 0,
        "qstash_message_id": "msg_1",
        "qstash_error": None,
        "error_message": None,
    }
    return Candidate(**(values | overrides))


@pytest.mark.parametrize(
    ("candidate", "at", "cron_on", "why"),
    [
        (row(), NOW - 3 * S, False, None),  # its delivery is not due yet
        (row(), NOW - S, False, Why.OVERDUE),  # it should have arrived by now
        (row(qstash_message_id=None, qstash_error="down"), NOW - 4 * S, True, Why.PUBLISH_FAILED),
        (row(qstash_message_id=None), NOW - 4 * S, False, Why.UNPUBLISHED),
        (row(qstash_message_id=None), NOW - 4 * S, True, None),  # cron's, while cron runs
        (row(claim_count=1), NOW + S, False, Why.RETRY),  # released after transient failures
        (row(status="loaded", claim_expires_at=NOW), NOW + S, False, Why.STALE),
        (row(status="loaded", claim_expires_at=NOW + 60 * S), NOW + S, False, None),  # live
    ],
)  # fmt: skip
def test_what_the_sweep_takes(candidate, at, cron_on, why):
    assert why_swept(candidate, at, SweepSettings(cron_on=cron_on)) is why


def test_qstash_down_at_create_and_still_down_at_the_opening_is_booked_at_its_instant(
    app, client, auth, session, clock, gateway, booking_client, announced
):
    store_session(app, session)
    gateway.down = True
    body = {
        "user_email": "ana@example.com",
        "available_at": NOW.isoformat(),
        "booking_data": {"box": "sandbox", "class_id": "1001", "day": "20261130"},
    }
    created = client.post("/api/prebookings", json=body, headers=auth).json
    assert created["qstash_message_id"] is None
    assert sweep_at(app, clock, NOW - 10 * S) == {}  # beyond the horizon: not yet
    assert sweep_at(app, clock, NOW - 2 * S) == {"publish_failed": 1}
    assert booking_client.calls and clock.slept_until[-1] == NOW  # at its instant, not before
    done = reload(session, created["id"])
    assert (done.status, done.executed_by) == ("completed", "fallback")
    assert [(a.path, a.action.value) for a in announced] == [("fallback", "executed")]


def test_a_published_prebooking_whose_delivery_never_came_is_armed_before_its_instant(
    app, session, clock, booking_client
):
    store_session(app, session)
    due = make_prebooking(session, available_at=NOW, qstash_message_id="msg_1")
    assert sweep_at(app, clock, NOW - 3 * S) == {}  # QStash still has time
    assert sweep_at(app, clock, NOW - S) == {"overdue": 1}
    assert reload(session, due).status == "completed"


def test_a_released_prebooking_is_retried_then_failed_with_the_reason_after_its_claims(
    app, session, clock, booking_client
):
    store_session(app, session)
    due = make_prebooking(session, available_at=NOW, qstash_message_id="msg_1")
    refused = result(BookingOutcome.TRANSIENT, sent=False, message="connect refused")
    booking_client.default = refused
    passes = [sweep_at(app, clock, NOW + i * S) for i in range(5)]
    assert passes[:3] == [{"overdue": 1}, {"released": 1}, {"released": 1}]
    assert passes[3] == {"failed": 1} and passes[4] == {}
    failed = reload(session, due)
    assert failed.status == "failed"
    assert failed.error_message == (
        "gave up after 3 claims without an outcome; last: connect refused"
    )


def test_a_stale_claim_is_re_armed_and_aimharder_asked_first(app, session, clock, booking_client):
    store_session(app, session)
    due = make_prebooking(session, available_at=NOW - 120 * S, qstash_message_id="msg_1")
    assert claim(session, due.id, path="qstash", now=NOW - 100 * S, lease=60 * S)
    due.book_sent_at = NOW - 99 * S
    session.commit()
    booking_client.booked_listing = True
    assert sweep_at(app, clock, NOW) == {"stale_claim": 1}
    assert booking_client.calls == [] and booking_client.listing_calls == 1
    assert reload(session, due).status == "completed"


def test_prebookings_outside_the_rollout_stay_crons_while_cron_runs(
    app, session, clock, booking_client
):
    app.config.update(LEGACY_CRON_ENABLED=True, QSTASH_ROLLOUT_PERCENT=0)
    store_session(app, session)
    make_prebooking(session, available_at=NOW, qstash_error="publish: down")
    assert sweep_at(app, clock, NOW - S) == {}


@pytest.mark.parametrize("flags", [{"QSTASH_ENABLED": False}, {"QSTASH_SHADOW": True}])
def test_the_sweep_rests_while_the_qstash_path_does_not_execute(
    app, session, clock, booking_client, flags
):
    app.config.update(LEGACY_CRON_ENABLED=True, **flags)
    store_session(app, session)
    make_prebooking(session, available_at=NOW, qstash_error="publish: down")
    assert sweep_at(app, clock, NOW - S) == {}


@pytest.mark.parametrize(
    ("lead_s", "overdue_ms", "expected"),
    [(3.0, 1500.0, 1.5), (2.0, 1500.0, 1.0), (1.0, 1500.0, 0.0), (10.0, 500.0, 0.5)],
)
def test_a_delivery_is_overdue_only_once_it_could_no_longer_arrive_in_time(
    lead_s, overdue_ms, expected
):
    config = {"QSTASH_LEAD_SECONDS": lead_s, "DISPATCH_OVERDUE_MS": overdue_ms}
    assert overdue_after(config) == timedelta(seconds=expected)
