"""The endpoint cron-job.org pings: auth, exact URL, flags, and what a tick books (both DBs)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from flask_app import close, create_app
from flask_app.core.dispatch import get_dispatcher
from flask_app.core.execution import claim
from flask_app.models import Prebooking
from legacy_cron import SETTLE
from legacy_cron.scheduler import run_tick
from tests.conftest import CRON_SECRET
from tests.factories import booking_data, make_prebooking, store_session
from tests.fakes import FakeClock

URL = "/api/cron/prebooking-scheduler"
CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def extra():
    """Parametrize this (not app_overrides) to change the config, keeping the fake clock."""
    return {}


@pytest.fixture
def app_overrides(clock, extra):
    return {"CLOCK": clock} | extra


@pytest.fixture
def session(app):
    with app.extensions["db"].session() as s:
        store_session(app, s)
        yield s


def add(session, n=1, **overrides):
    """n due prebookings, each for its own class (class_id = row id), oldest first."""
    rows = []
    for i in range(n):
        values = {"available_at": NOW - S, "created_at": NOW - timedelta(minutes=10) + i * S}
        row = make_prebooking(session, **(values | overrides))
        row.booking_data = booking_data(class_id=row.id)
        session.commit()
        rows.append(row)
    return rows


def fire(app):
    """Let the dispatcher fire what the tick armed (the test clock jumps to each step)."""
    get_dispatcher(app).drain()


def statuses(session):
    session.expire_all()
    return {r.id: r.status for r in session.scalars(select(Prebooking))}


def test_missing_token_is_401(client):
    response = client.post(URL)
    assert response.status_code == 401
    assert response.json == {"error": "missing bearer token (Authorization: Bearer <token>)"}


@pytest.mark.parametrize("header", ["Bearer wrong-secret", f"Basic {CRON_SECRET}", "Bearer"])
def test_wrong_token_is_401_and_books_nothing(client, session, booking_client, header):
    add(session)
    response = client.post(URL, headers={"Authorization": header})
    assert response.status_code == 401 and "error" in response.json
    assert booking_client.calls == []


def test_unset_secret_is_503(app_config, session, booking_client):
    app = create_app(app_config | {"CRON_SECRET": None})
    response = app.test_client().post(URL, headers=CRON)
    assert response.status_code == 503
    assert response.json == {"error": "CRON_SECRET is not configured; this endpoint is disabled"}
    close(app)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", [URL, URL + "/"])
def test_both_methods_and_a_trailing_slash_run_the_tick_without_redirect(
    app, client, session, booking_client, method, path
):
    add(session)
    response = client.open(path, method=method, headers=CRON)
    assert response.status_code == 200
    assert response.json["ran"] is True and response.json["claimed"] == 1
    fire(app)
    assert len(booking_client.calls) == 1


def test_a_tick_arms_what_is_due_answers_at_once_and_the_dispatcher_books_it(
    app, client, session, booking_client
):
    rows = add(session, 3)
    response = client.post(URL, headers=CRON)
    body = response.json
    assert response.status_code == 200
    assert {k: body[k] for k in ("ran", "due", "claimed", "deferred")} == {
        "ran": True,
        "due": 3,
        "claimed": 3,
        "deferred": 0,
    }
    assert body["lost_claim"] == body["errors"] == body["recovered"] == 0
    assert len(body["tick_id"]) == 12 and isinstance(body["duration_ms"], int)
    assert len(response.data) < 1024  # cron-job.org fails runs whose response is too large
    assert booking_client.calls == [] and set(statuses(session).values()) == {"loaded"}
    fire(app)
    assert set(statuses(session).values()) == {"completed"}
    assert {r.executed_by for r in session.scalars(select(Prebooking))} == {"cron"}
    assert sorted(c["class_id"] for c in booking_client.calls) == sorted(r.id for r in rows)


def test_nothing_due_is_still_a_200(client, session, booking_client):
    add(session, available_at=NOW + timedelta(minutes=5))
    response = client.post(URL, headers=CRON)
    assert response.status_code == 200
    assert (response.json["due"], response.json["claimed"]) == (0, 0)
    assert booking_client.calls == []


@pytest.mark.parametrize("extra", [{"LEGACY_CRON_ENABLED": False, "QSTASH_ENABLED": True}])
def test_disabled_flag_answers_200_and_books_nothing(client, session, booking_client):
    add(session, 2)
    response = client.post(URL, headers=CRON)
    assert response.status_code == 200
    assert response.json == {"ran": False, "reason": "LEGACY_CRON_ENABLED is false"}
    assert booking_client.calls == []
    assert set(statuses(session).values()) == {"pending"}


def test_business_failures_still_answer_200_and_end_the_prebookings(
    app, client, session, booking_client
):
    from flask_app.aimharder.client import BookingOutcome
    from tests.fakes import result

    add(session, 2)
    booking_client.script = [result(BookingOutcome.FULL), result(BookingOutcome.NO_CREDITS)]
    response = client.post(URL, headers=CRON)
    assert response.status_code == 200
    fire(app)
    assert set(statuses(session).values()) == {"failed"}


def test_a_database_that_cannot_be_reached_is_503(fernet_key, tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}",
            "CRON_SECRET": CRON_SECRET,
            "SESSION_ENCRYPTION_KEYS": fernet_key,
        }
    )
    response = app.test_client().post(URL, headers=CRON)
    assert response.status_code == 503
    assert response.json == {
        "error": "could not read due prebookings from the database; the tick did not run"
    }


class FrozenClock:
    """The executor's clock read from freezegun's frozen time; waiting moves frozen time on."""

    def __init__(self, frozen):
        self.frozen = frozen

    def now(self):
        return datetime.now(UTC)

    def sleep_until(self, at):
        if at > self.now():
            self.frozen.tick(at - self.now())


def test_due_prebookings_are_booked_when_their_window_opens_under_frozen_time(
    app, session, booking_client
):
    add(session, 2)
    (later,) = add(session, available_at=NOW + 30 * S, created_at=NOW - timedelta(hours=1))
    with freeze_time(NOW) as frozen:
        app.extensions["executor"].clock = FrozenClock(frozen)
        first = app.test_client().post(URL, headers=CRON).json
        fire(app)
        frozen.move_to(NOW + 31 * S)
        second = app.test_client().post(URL, headers=CRON).json
        fire(app)
    assert (first["due"], first["claimed"], second["due"], second["claimed"]) == (2, 2, 1, 1)
    assert booking_client.calls[-1]["class_id"] == later.id
    assert set(statuses(session).values()) == {"completed"}


@pytest.mark.parametrize("extra", [{"CRON_STAGGER_MS": 50}])
def test_a_class_fires_oldest_request_first_fifty_ms_apart(app, session, clock, booking_client):
    created = [NOW - timedelta(minutes=m) for m in (3, 9, 1, 8, 5)]
    rows = [
        add(session, created_at=at, booking_data=booking_data(class_id="77"))[0] for at in created
    ]
    for row in rows:
        row.booking_data = booking_data(class_id="77", family_id=row.id)  # one class: FIFO
    session.commit()
    fifo = [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id))]
    report = run_tick(app)
    fire(app)
    assert report.claimed == 5
    assert [call["family_id"] for call in booking_client.calls] == fifo
    anchor = NOW + SETTLE
    assert clock.slept_until[-5:] == [anchor + i * 50 * MS for i in range(5)]


@pytest.mark.parametrize("extra", [{"CRON_TICK_BUDGET_S": 0}])
def test_what_is_not_armed_within_the_budget_stays_pending_for_the_next_tick(
    app, client, session, clock, booking_client
):
    rows = add(session, 3)
    first = client.post(URL, headers=CRON).json
    assert (first["due"], first["claimed"], first["deferred"]) == (3, 1, 2)  # the oldest went
    now = statuses(session)
    assert [now[r.id] for r in rows] == ["loaded", "pending", "pending"]
    fire(app)
    clock.advance(60 * S)
    second = client.post(URL, headers=CRON).json
    assert (second["due"], second["claimed"], second["deferred"]) == (2, 1, 1)


@pytest.mark.parametrize("extra", [{"CRON_BATCH_LIMIT": 3}])
def test_the_batch_limit_leaves_the_newest_for_the_next_tick(client, session, booking_client):
    add(session, 5)
    assert client.post(URL, headers=CRON).json["due"] == 3
    assert list(statuses(session).values()).count("pending") == 2


def test_a_tick_overlapping_an_earlier_one_does_not_arm_its_prebooking_again(
    app, client, session, booking_client
):
    add(session)
    first = client.post(URL, headers=CRON).json
    overlapping = client.post(URL, headers=CRON).json  # the next minute, or a manual run
    fire(app)
    assert (first["claimed"], overlapping["due"], overlapping["claimed"]) == (1, 0, 0)
    assert len(booking_client.calls) == 1


def test_concurrent_ticks_book_each_prebooking_once(app, session, booking_client):
    rows = add(session, 12)
    barrier = threading.Barrier(4)
    bodies = []

    def tick():
        http = app.test_client()
        barrier.wait()
        bodies.append(http.post(URL, headers=CRON).json)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fire(app)
    assert sum(b["claimed"] for b in bodies) == 12
    assert sorted(c["class_id"] for c in booking_client.calls) == sorted(r.id for r in rows)


def hold_dead_claim(session, row, *, sent):
    """A worker claimed `row` two minutes ago (60 s lease) and died; maybe after sending.

    The lease runs from the later of the claim and the opening, so `row` opened earlier still.
    """
    assert claim(session, row.id, path="cron", now=NOW - 120 * S, lease=60 * S)
    if sent:
        session.query(Prebooking).filter_by(id=row.id).update({"book_sent_at": NOW - 119 * S})
        session.commit()


def test_an_expired_claim_is_recovered_and_aimharder_is_asked_before_booking(
    client, session, booking_client
):
    (row,) = add(session, available_at=NOW - 180 * S)
    hold_dead_claim(session, row, sent=True)
    booking_client.booked_listing = True  # the dead worker's request had gone through
    body = client.post(URL, headers=CRON).json
    fire(client.application)
    assert (body["due"], body["recovered"], body["claimed"]) == (1, 1, 1)
    assert booking_client.listing_calls == 1 and booking_client.calls == []
    session.expire_all()
    done = session.get(Prebooking, row.id)
    assert (done.status, done.result["outcome"], done.claim_count) == (
        "completed",
        "already_booked",
        2,
    )


def test_an_expired_claim_aimharder_never_saw_is_booked_once(client, session, booking_client):
    (row,) = add(session, available_at=NOW - 180 * S)
    hold_dead_claim(session, row, sent=True)
    booking_client.booked_listing = False
    body = client.post(URL, headers=CRON).json
    fire(client.application)
    assert (body["recovered"], body["claimed"]) == (1, 1)
    assert booking_client.listing_calls == 1 and len(booking_client.calls) == 1


def test_an_expired_claim_that_never_sent_is_booked_without_asking(client, session, booking_client):
    (row,) = add(session, available_at=NOW - 180 * S)
    hold_dead_claim(session, row, sent=False)
    body = client.post(URL, headers=CRON).json
    fire(client.application)
    assert (body["recovered"], body["claimed"]) == (1, 1)
    assert booking_client.listing_calls == 0 and len(booking_client.calls) == 1


def test_a_live_claim_is_left_alone(client, session, booking_client):
    (row,) = add(session)
    assert claim(session, row.id, path="qstash", now=NOW - 5 * S, lease=60 * S)
    body = client.post(URL, headers=CRON).json
    fire(client.application)
    assert (body["due"], body["claimed"]) == (0, 0)
    assert booking_client.calls == [] and statuses(session)[row.id] == "loaded"


def test_cancelled_and_finished_prebookings_are_never_due(client, session, booking_client):
    add(session, status="cancelled")
    add(session, status="completed")
    add(session, status="failed")
    body = client.post(URL, headers=CRON).json
    assert body["due"] == 0 and booking_client.calls == []
