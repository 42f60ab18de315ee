"""The dispatcher on a test clock: arming, FIFO per class, leaders and followers, re-sends.

A test clock runs no threads: `drain()` does every due step inline and moves the clock, so
these tests assert what was booked, in which order and what was recorded, never durations.
Several dispatchers with their own tokens stand for several processes sharing the database
(real processes: tests/test_dispatch_processes.py).
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.core import events
from flask_app.core.dispatch import (
    ArmResult,
    Arrival,
    Dispatcher,
    DispatchSettings,
    get_dispatcher,
)
from flask_app.core.execution import adopt, claim, get_executor
from flask_app.core.fire_groups import beat, elect
from flask_app.models import FireGroup
from tests.factories import booking_data, make_prebooking, reload, store_session
from tests.fakes import FakeClock, result

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=3))


@pytest.fixture
def app_overrides(clock):
    # The gym's clock without a margin: these tests fire at the opening by the test clock.
    return {"CLOCK": clock, "QSTASH_FIRE_STAGGER_MS": 2.0, "GYM_CLOCK_MARGIN_MS": 0.0}


@pytest.fixture
def announced():
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        yield seen


def crowd(app, session, n, *, opens=NOW, class_id="1001"):
    """n prebookings of one class, created one second apart (so FIFO is creation order)."""
    rows = []
    for i in range(n):
        email = f"user{i}@example.com"
        store_session(app, session, email)
        created = NOW - timedelta(hours=1) + timedelta(seconds=i)
        data = booking_data(class_id=class_id)
        rows.append(
            make_prebooking(
                session, user_email=email, available_at=opens, created_at=created, booking_data=data
            )
        )
    return rows


def arrival(clock, path="qstash"):
    return Arrival(path, clock.now(), message_id="msg_1", retried=0)


def other_process(app, token):
    """A second dispatcher over the same database, as another process would run it."""
    executor = get_executor(app)
    mine = get_dispatcher(app)
    return Dispatcher(executor, mine.settings, mine.load_cookies, token=token)


def booked_order(booking_client):
    return [call["cookies"]["amhrdrauth"].removeprefix("token-") for call in booking_client.calls]


def test_arming_claims_at_once_and_books_only_at_the_instant(
    app, session, clock, booking_client, announced
):
    [row] = crowd(app, session, 1)
    admitted = get_dispatcher(app).arm(row.id, arrival(clock))
    assert (admitted.result, admitted.fire_at) == (ArmResult.ARMED, NOW)
    loaded = reload(session, row)
    assert (loaded.status, loaded.executed_by, loaded.book_sent_at) == ("loaded", "qstash", None)
    assert booking_client.calls == [] and announced == []
    get_dispatcher(app).drain()
    assert [c["at"] for c in booking_client.calls] and clock.now() == NOW
    assert reload(session, row).status == "completed"
    [attempt] = announced
    assert (attempt.path, attempt.action.value, attempt.fired_at) == ("qstash", "executed", NOW)
    assert (attempt.message_id, attempt.retried) == ("msg_1", 0)


def test_a_duplicate_arrival_claims_nothing_and_books_nothing(app, session, clock, booking_client):
    [row] = crowd(app, session, 1)
    dispatcher = get_dispatcher(app)
    assert dispatcher.arm(row.id, arrival(clock)).result is ArmResult.ARMED
    assert dispatcher.arm(row.id, arrival(clock)).result is ArmResult.LOST
    dispatcher.drain()
    assert len(booking_client.calls) == 1 and dispatcher.held == 0


def test_a_class_fires_in_creation_order_at_rank_instants_whatever_the_arming_order(
    app, session, clock, booking_client
):
    rows = crowd(app, session, 4)
    dispatcher = get_dispatcher(app)
    for row in reversed(rows):
        dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert booked_order(booking_client) == [f"user{i}@example.com" for i in range(4)]
    assert clock.slept_until[-4:] == [NOW + 2 * MS * i for i in range(4)]


def test_the_leader_adopts_the_members_other_processes_armed_and_fires_the_class_in_order(
    app, session, clock, booking_client, announced
):
    rows = crowd(app, session, 6)
    here, there = get_dispatcher(app), other_process(app, "there")
    for i, row in enumerate(rows):
        (here if i % 2 else there).arm(row.id, arrival(clock, "cron" if i == 5 else "qstash"))
    here.drain()  # elected first: adopts all six
    there.drain()  # loses the election; its members are the leader's now
    assert booked_order(booking_client) == [f"user{i}@example.com" for i in range(6)]
    assert [reload(session, r).status for r in rows] == ["completed"] * 6
    assert sorted(a.path for a in announced) == ["cron"] + ["qstash"] * 5
    assert {a.detail["fired_by"] for a in announced} == {"leader"}
    assert here.held == 0 and there.held == 0


def test_members_a_dead_leader_adopted_are_rescued_by_the_watchdog(
    app, session, clock, booking_client, announced
):
    rows = crowd(app, session, 3)
    follower = get_dispatcher(app)
    for row in rows:
        follower.arm(row.id, arrival(clock))
    key = rows[0].class_key
    # Another process won the class and adopted everything, then died before sending.
    elect(session, key, NOW, 2 * MS, clock.now(), clock.now() - timedelta(hours=1), "dead")
    assert len(adopt(session, key, clock.now(), "dead")) == 3
    follower.drain()
    assert booked_order(booking_client) == [f"user{i}@example.com" for i in range(3)]
    assert {a.detail["fired_by"] for a in announced} == {"watchdog"}
    assert all(a.fired_at >= NOW + follower.settings.watchdog for a in announced)


def test_without_a_leader_every_process_fires_its_own_at_the_same_rank_instants(
    app, session, clock, booking_client, announced
):
    app.config["DISPATCH_LEADER"] = False
    settings = DispatchSettings.from_config(app.config)
    rows = crowd(app, session, 4)
    here, there = other_process(app, "here"), other_process(app, "there")
    here.settings = there.settings = settings
    for i, row in enumerate(rows):
        (here if i % 2 else there).arm(row.id, arrival(clock))
    here.drain()
    there.drain()
    fired = {a.prebooking_id: (a.detail["rank"], a.detail["fired_by"]) for a in announced}
    assert fired == {row.id: (i, "own") for i, row in enumerate(rows)}
    assert all(a.fired_at >= NOW + 2 * MS * a.detail["rank"] for a in announced)  # never early
    assert len(booking_client.calls) == 4


def test_the_admission_bound_refuses_without_claiming_and_says_so(app, session, clock, client):
    rows = crowd(app, session, 3)
    dispatcher = get_dispatcher(app)
    dispatcher.settings = DispatchSettings(max_held=2, stagger=2 * MS)
    results = [dispatcher.arm(row.id, arrival(clock)).result for row in rows]
    assert results == [ArmResult.ARMED, ArmResult.ARMED, ArmResult.FULL]
    assert reload(session, rows[2]).status == "pending"
    health = client.get("/api/health").json["dispatcher"]
    assert (health["held"], health["full"], health["refused"]) == (2, True, 1)
    metrics = client.get("/metrics").text
    assert 'dispatch_admissions_total{result="full"} 1.0' in metrics


def test_a_class_whose_instant_passed_fires_shortly_after_its_election(
    app, session, clock, booking_client
):
    clock.current = NOW + timedelta(seconds=5)
    [row] = crowd(app, session, 1)
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert clock.slept_until[-1] == NOW + timedelta(seconds=5) + dispatcher.settings.late_delay
    assert reload(session, row).status == "completed"


def test_too_early_answers_are_sent_again_at_once_then_book(app, session, clock, booking_client):
    [row] = crowd(app, session, 1)
    too_early = result(BookingOutcome.TOO_EARLY)
    booking_client.script = [too_early, too_early, result()]
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert len(booking_client.calls) == 3
    assert reload(session, row).status == "completed"


def test_too_early_past_the_resend_bound_fails_saying_so(app, session, clock, booking_client):
    [row] = crowd(app, session, 1)
    booking_client.default = result(BookingOutcome.TOO_EARLY)
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    sends = 1 + dispatcher.settings.resend_max
    assert len(booking_client.calls) == sends
    failed = reload(session, row)
    assert failed.status == "failed" and failed.error_message.startswith(f"too early after {sends}")


def test_transient_failures_are_sent_again_then_released_for_the_sweep(
    app, session, clock, booking_client
):
    [row] = crowd(app, session, 1)
    failing = result(BookingOutcome.TRANSIENT, sent=True, uncertain=True, message="HTTP 503")
    booking_client.default = replace(failing, status_code=503)
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert len(booking_client.calls) == 1 + dispatcher.settings.resend_max
    released = reload(session, row)
    assert (released.status, released.error_message) == ("pending", "HTTP 503")
    assert released.book_sent_at is not None  # the next claimant asks AimHarder first


def test_a_request_sent_without_an_answer_is_not_sent_again_blindly(
    app, session, clock, booking_client
):
    [row] = crowd(app, session, 1)
    booking_client.default = result(BookingOutcome.TRANSIENT, sent=True, uncertain=True)
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert len(booking_client.calls) == 1
    assert reload(session, row).status == "pending"


def test_a_rearmed_prebooking_whose_request_may_have_left_asks_aimharder_first(
    app, session, clock, booking_client, announced
):
    [row] = crowd(app, session, 1)
    row.book_sent_at = NOW
    session.commit()
    booking_client.booked_listing = True
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert booking_client.calls == [] and booking_client.listing_calls == 1
    assert reload(session, row).status == "completed"
    assert announced[0].action.value == "confirmed"


def test_a_user_without_a_stored_session_fails_without_a_request(
    app, session, clock, booking_client, announced
):
    row = make_prebooking(session, user_email="nobody@example.com", available_at=NOW)
    dispatcher = get_dispatcher(app)
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert booking_client.calls == [] and reload(session, row).status == "failed"
    assert announced[0].action.value == "failed" and dispatcher.held == 0


def test_an_arrival_that_armed_nothing_is_announced_with_the_real_reason(
    app, session, clock, announced
):
    [row] = crowd(app, session, 1)
    claim(session, row.id, path="cron", now=clock.now(), lease=timedelta(seconds=60))
    dispatcher = get_dispatcher(app)
    assert dispatcher.arm(row.id, arrival(clock)).result is ArmResult.LOST
    dispatcher.note_lost(row.id, arrival(clock))
    assert [(a.action.value, a.detail) for a in announced] == [
        ("lost_claim", {"executed_by": "cron"})
    ]


def test_the_first_bid_leads_a_class_and_a_past_round_is_elected_anew(app, session, clock):
    key = "sandbox/1001/20261130/0"
    stale = clock.now() - timedelta(seconds=10)
    first = elect(session, key, NOW, 2 * MS, clock.now(), stale, "a")
    second = elect(session, key, NOW + MS, 5 * MS, clock.now(), stale, "b")
    assert first.won and not second.won
    assert (second.anchor, second.stagger) == (NOW, 2 * MS)  # the leader's terms
    later = NOW + timedelta(minutes=1)
    third = elect(session, key, later, MS, later, later - timedelta(seconds=10), "b")
    assert third.won and session.get(FireGroup, key).leader == "b"


class GymClockDouble:
    """A gym clock that learns 30 ms from each too-early answer."""

    def __init__(self):
        self.behind = timedelta(0)
        self.notes = []

    def fire_instant(self, box, opening_at):
        return opening_at + self.behind

    def note_too_early(self, box, *, sent_at, opening_at):
        self.notes.append(("too_early", sent_at))
        self.behind += 30 * MS

    def note_accepted(self, box, *, sent_at, opening_at):
        self.notes.append(("accepted", sent_at))


def test_too_early_answers_feed_the_gym_clock_and_the_re_send_follows_it(
    app, session, clock, booking_client
):
    [row] = crowd(app, session, 1)
    gym = GymClockDouble()
    dispatcher = get_dispatcher(app)
    dispatcher.gym = gym
    booking_client.script = [result(BookingOutcome.TOO_EARLY), result()]
    dispatcher.arm(row.id, arrival(clock))
    dispatcher.drain()
    assert [kind for kind, _ in gym.notes] == ["too_early", "accepted"]
    assert [at for _, at in gym.notes] == [NOW, NOW + 30 * MS]  # sent again at its new instant
    assert reload(session, row).status == "completed"


def test_the_watchdog_leaves_a_live_leaders_members_alone_and_takes_a_silent_ones(
    app, session, clock, booking_client, announced
):
    rows = crowd(app, session, 2)
    follower = get_dispatcher(app)
    for row in rows:
        follower.arm(row.id, arrival(clock))
    key = rows[0].class_key
    elect(session, key, NOW, 2 * MS, clock.now(), clock.now() - timedelta(hours=1), "slow")
    assert len(adopt(session, key, clock.now(), "slow")) == 2  # the leader took them ...
    beat(session, "slow", NOW + follower.settings.watchdog)  # ... and is alive, only slow
    follower.drain(until=NOW + follower.settings.watchdog)
    assert booking_client.calls == []  # left to the live leader
    follower.drain()  # it falls silent: a later watch takes its members
    assert booked_order(booking_client) == ["user0@example.com", "user1@example.com"]
    assert {a.detail["fired_by"] for a in announced} == {"watchdog"}


def test_processes_bid_for_classes_opening_together_in_different_orders(app):
    here, there = other_process(app, "here"), other_process(app, "there")
    keys = [f"sandbox/{i}/20261130/0" for i in range(50)]
    first_here = min(keys, key=here._bid_delay)
    first_there = min(keys, key=there._bid_delay)
    assert first_here != first_there  # each leads some classes: not all won by one process
    assert all(timedelta(0) <= here._bid_delay(k) < here.settings.lead for k in keys)
