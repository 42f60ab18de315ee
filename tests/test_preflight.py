"""Pre-flight: each stored session checked once before its window; dead ones expire the
prebookings (still bookable), the user is told, and a new session revives them."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from flask_app.aimharder.client import SessionState
from flask_app.aimharder.gym_clock import ClockPolicy
from flask_app.background import get_runner
from flask_app.core import events
from flask_app.core.execution import get_executor
from flask_app.core.preflight import DEAD, NO_SESSION, Detached, check_sessions, take_due, threads
from flask_app.models import OutboxEntry
from flask_app.qstash import outbox
from tests.factories import make_prebooking, reload, store_session
from tests.fake_gateway import FakeGateway
from tests.fakes import FakeClock

NOW = datetime(2026, 11, 30, 14, 52, 0, tzinfo=UTC)
OPENS = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)  # 8 minutes ahead: inside the 10 min lead
SECRET = "s" * 40


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(clock, gateway):
    return {
        "CLOCK": clock,
        "QSTASH_GATEWAY": gateway,
        "NOTIFY_SIGNING_SECRET": SECRET,
        "PREFLIGHT_LEAD_S": 600,
        "GYM_CLOCK_PROBES": 10,
    }


@pytest.fixture
def due(app, session):
    store_session(app, session, cookies={"amhrdrauth": "cookie-ana"})
    return make_prebooking(session, available_at=OPENS, notify_url="https://ana.example/hook")


def test_dead_session_expires_the_prebooking_and_tells_the_user(
    app, session, due, booking_client, gateway
):
    booking_client.dead_cookies = {"cookie-ana"}
    report = check_sessions(app, NOW)
    assert report.to_json() == {"checked": 1, "expired": 1, "unknown": 0, "users": 1}
    row = reload(session, due)
    assert (row.status, row.error_message, row.session_checked_at) == ("session_expired", DEAD, NOW)
    [check] = booking_client.session_checks
    assert (check["box_id"], check["cookies"]) == ("10122", {"amhrdrauth": "cookie-ana"})
    [owed] = session.scalars(select(OutboxEntry)).all()  # written with the expiry
    assert (owed.prebooking_id, owed.action) == (due.id, "notify")
    with app.app_context():
        assert outbox.drain(NOW)["notified"] == 1
    [event] = gateway.published
    assert event.url == "https://ana.example/hook"
    assert event.body["type"] == "prebooking.session_expired"
    assert event.body["data"]["reason"] == DEAD


def test_alive_session_is_checked_once_and_stays_pending(app, session, due, booking_client):
    assert check_sessions(app, NOW).checked == 1
    assert check_sessions(app, NOW + timedelta(minutes=1)).checked == 0
    assert len(booking_client.session_checks) == 1
    row = reload(session, due)
    assert (row.status, row.session_checked_at) == ("pending", NOW)


def test_a_check_that_cannot_tell_is_retried_by_the_next_run(app, session, due, booking_client):
    booking_client.session_state = SessionState.UNKNOWN
    assert check_sessions(app, NOW).unknown == 1
    assert reload(session, due).session_checked_at is None
    booking_client.session_state = SessionState.ALIVE
    assert check_sessions(app, NOW + timedelta(minutes=1)).checked == 1
    assert reload(session, due).status == "pending"


def test_no_stored_session_counts_as_dead_without_asking_aimharder(app, session, booking_client):
    row = make_prebooking(session, user_email="nobody@example.com", available_at=OPENS)
    assert check_sessions(app, NOW).expired == [row.id]
    assert reload(session, row).error_message == NO_SESSION
    assert booking_client.session_checks == []


def test_only_windows_within_the_lead_are_checked(app, session, booking_client):
    store_session(app, session)
    later = make_prebooking(session, available_at=NOW + timedelta(minutes=11))
    opened = make_prebooking(session, available_at=NOW - timedelta(seconds=1))
    assert check_sessions(app, NOW).checked == 0
    assert reload(session, later).session_checked_at is None
    assert reload(session, opened).session_checked_at is None


def test_one_read_per_user_for_several_prebookings(app, session, booking_client):
    store_session(app, session)
    rows = [make_prebooking(session, available_at=OPENS + timedelta(seconds=i)) for i in range(3)]
    assert check_sessions(app, NOW).to_json()["users"] == 1
    assert len(booking_client.session_checks) == 1
    assert all(reload(session, r).session_checked_at == NOW for r in rows)


def test_a_prebooking_is_taken_for_checking_by_one_run_only(app, session, due):
    with get_executor(app).sessions() as first, get_executor(app).sessions() as second:
        assert [d.id for d in take_due(first, NOW, timedelta(minutes=10))] == [due.id]
        assert take_due(second, NOW, timedelta(minutes=10)) == []


def test_zero_lead_disables_the_pre_flight(app, session, due, booking_client):
    app.config["PREFLIGHT_LEAD_S"] = 0
    assert check_sessions(app, NOW).checked == 0


def test_new_session_revives_the_prebooking_to_pending(
    app, session, due, booking_client, client, auth
):
    booking_client.dead_cookies = {"cookie-ana"}
    check_sessions(app, NOW)
    put = client.put(
        "/api/sessions/ana@example.com", json={"cookies": {"amhrdrauth": "fresh"}}, headers=auth
    )
    assert put.status_code == 200
    assert put.json["revived"] == [due.id]
    row = reload(session, due)
    assert (row.status, row.session_checked_at, row.error_message) == ("pending", None, None)
    assert client.get(f"/api/prebookings/{due.id}", headers=auth).json["status"] == "pending"
    # Checked again by the next run, now alive.
    assert check_sessions(app, NOW + timedelta(minutes=1)).expired == []


def test_session_expired_prebooking_is_still_tried_at_the_instant(
    app, session, due, clock, booking_client
):
    booking_client.dead_cookies = {"cookie-ana"}
    check_sessions(app, NOW)
    clock.current = OPENS
    attempt = get_executor(app).attempt(due.id, path="qstash")
    assert attempt.won and attempt.status == "completed"  # the fake books whatever cookie
    assert len(booking_client.calls) == 1


def test_session_expired_prebooking_can_be_cancelled(
    app, session, due, booking_client, client, auth
):
    booking_client.dead_cookies = {"cookie-ana"}
    check_sessions(app, NOW)
    resp = client.delete(f"/api/prebookings/{due.id}", headers=auth)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"


def test_the_background_runner_runs_the_checks_and_probes_off_its_thread(
    app, session, due, booking_client, clock
):
    booking_client.dead_cookies = {"cookie-ana"}
    clock.current = OPENS - timedelta(seconds=60)  # within both leads
    seen = []
    with events.sessions_expired.connected_to(lambda sender, **kw: seen.append(kw), sender=app):
        ran = get_runner(app).run_once(clock.current)
        assert ran["gym-preflight"] == {"started": True}
        assert ran["gym-clocks"] == {"started": True}
        for detached in threads(app).values():
            detached.join(10)
    assert reload(session, due).status == "session_expired"
    assert seen[0]["prebooking_ids"] == [due.id]


def test_the_jobs_say_when_they_are_disabled(app):
    app.config["PREFLIGHT_LEAD_S"] = 0
    app.extensions["gym_clocks"].policy = ClockPolicy(probes=0)
    ran = get_runner(app).run_once()
    assert ran["gym-preflight"] == ran["gym-clocks"] == {"disabled": True}


def test_a_detached_job_runs_one_at_a_time():
    gate = threading.Event()
    detached = Detached("test-job")
    assert detached.start(gate.wait)
    assert not detached.start(gate.wait)  # the previous run is still going
    gate.set()
    detached.join(5)
    assert detached.start(lambda: None)
    detached.join(5)
