"""The dispatcher on the real clock, through the firing line and the answer reader, against the
AimHarder sandbox: what the sandbox received and in which order, never how fast."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aimharder_sandbox.testing import run_sandbox
from flask_app.core import events
from flask_app.core.dispatch import ArmResult, Arrival, get_dispatcher
from tests.factories import booking_data, make_prebooking, reload, store_session

DAY = "20261130"


@pytest.fixture
def sandbox():
    with run_sandbox() as running:
        yield running


@pytest.fixture
def app_overrides(sandbox):
    # The real AimHarder client (it prepares raw requests for the firing line).
    return {"AIMHARDER_CLIENT": None, "AIMHARDER_BASE_URL": sandbox.url}


@pytest.fixture
def announced():
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        yield seen


def crowd(app, session, n, opening):
    """n prebookings of one class created one second apart; their users, oldest first."""
    users = [f"live{i:02d}" for i in range(n)]
    rows = []
    for i, user in enumerate(users):
        email = f"{user}@example.com"
        store_session(app, session, email, {"amhrdrauth": user})
        created = opening - timedelta(hours=1) + timedelta(seconds=i)
        rows.append(
            make_prebooking(
                session,
                user_email=email,
                available_at=opening,
                created_at=created,
                booking_data=booking_data(day=DAY),
            )
        )
    return users, rows


def arm_all(app, rows):
    dispatcher = get_dispatcher(app)
    arrival = Arrival("qstash", datetime.now(UTC))
    assert {dispatcher.arm(row.id, arrival).result for row in rows} == {ArmResult.ARMED}
    assert dispatcher.wait_idle(30), "armed prebookings never settled"


def test_a_class_reaches_aimharder_in_creation_order_and_never_early(
    app, session, sandbox, announced
):
    opening = datetime.now(UTC) + timedelta(seconds=3)  # past the election: all armed
    sandbox.add_class("1001", DAY, opens_at=opening, capacity=30)
    users, rows = crowd(app, session, 30, opening)
    arm_all(app, rows[::2] + rows[1::2])  # armed out of order
    arrivals = sorted(sandbox.arrivals(), key=lambda a: a["at_ns"])
    assert [a["user"] for a in arrivals] == users
    assert {a["book_state"] for a in arrivals} == {1}  # none too early, all booked
    assert {reload(session, r).status for r in rows} == {"completed"}
    assert {a.detail["fired_by"] for a in announced} == {"leader"}


def test_a_too_early_answer_is_sent_again_at_once_over_the_same_connection(
    app, session, sandbox, announced
):
    opening = datetime.now(UTC) + timedelta(seconds=3)  # past the election: all armed
    # The gym's clock is behind ours: at our instant it still says "too early".
    sandbox.add_class("1001", DAY, opens_at=opening + timedelta(milliseconds=25), capacity=5)
    _, rows = crowd(app, session, 1, opening)
    arm_all(app, rows)
    states = [a["book_state"] for a in sorted(sandbox.arrivals(), key=lambda a: a["at_ns"])]
    assert states[-1] == 1 and set(states[:-1]) <= {-12} and len(states) >= 2
    assert reload(session, rows[0]).status == "completed"
    assert announced[0].detail["sends"] == len(states)
    assert sandbox.connections() == 1  # the re-sends reused the prepared connection


def test_a_class_told_too_early_is_sent_again_in_creation_order(app, session, sandbox):
    """The gym's clock is behind ours and nothing estimated it yet: the whole class answers
    -12 at once; its re-sends go out in rounds, each in rank order, so the first to prebook is
    still the first the gym accepts."""
    dispatcher = get_dispatcher(app)  # re-send rounds 100 ms, then 200 ms after the answers
    dispatcher.settings = replace(
        dispatcher.settings,
        resend_max=8,
        resend_gap=timedelta(milliseconds=100),
        # A round waits for every answer of the class still in flight, at most this long: a
        # reader stalled for a second on a loaded CI machine (seen) must not split a round.
        resend_window=timedelta(seconds=10),
    )
    opening = datetime.now(UTC) + timedelta(seconds=5)  # room to create 30 on a busy machine
    # The gym opens 250 ms after our opening: the first sends (~+5 ms) and the first round
    # (~+110 ms) are told -12, a later round is accepted.
    sandbox.add_class("1001", DAY, opens_at=opening + timedelta(milliseconds=250), capacity=30)
    users, rows = crowd(app, session, 30, opening)
    arm_all(app, rows[::-1])  # armed newest first
    sends: dict[str, list[dict]] = {user: [] for user in users}
    for arrival in sorted(sandbox.arrivals(), key=lambda a: a["at_ns"]):
        sends[arrival["user"]].append(arrival)
    assert sum(len(s) > 1 for s in sends.values()) >= 2  # a round of several: the case under test
    for k in range(1, max(map(len, sends.values()))):  # each round: the k-th sends, by arrival
        sent = [u for u in users if len(sends[u]) > k]
        assert sorted(sent, key=lambda u: sends[u][k]["at_ns"]) == sent, f"round {k}"
    assert [s[-1]["book_state"] for s in sends.values()] == [1] * 30
    assert {reload(session, r).status for r in rows} == {"completed"}
    # Only a machine stalled for the gym's 250 ms in the middle of one burst (a first send
    # or a round straddling the gym's opening) could let a later rank be accepted first.


def test_closing_the_app_ends_its_threads_after_the_booking_in_flight(app, session, sandbox):
    """gunicorn's worker_exit calls flask_app.close: nothing of the app is left running or
    holding a database connection, and what it armed was booked and recorded first."""
    import threading

    from flask_app import close

    opening = datetime.now(UTC) + timedelta(seconds=3)
    sandbox.add_class("1001", DAY, opens_at=opening, capacity=5)
    _, rows = crowd(app, session, 3, opening)
    arm_all(app, rows)
    close(app)
    left = [t.name for t in threading.enumerate() if t.name.startswith(("dispatch", "background"))]
    assert left == []
    assert {reload(session, r).status for r in rows} == {"completed"}


def test_closing_the_app_hands_back_what_it_has_not_sent(app, session, sandbox, announced):
    """A worker that exits before its class's instant releases its armed prebookings to
    pending at once (the sweep of a live process re-arms them before the instant), instead of
    keeping them claimed until the lease runs out, after the class is full."""
    from flask_app import close

    opening = datetime.now(UTC) + timedelta(seconds=30)
    sandbox.add_class("1001", DAY, opens_at=opening, capacity=5)
    _, rows = crowd(app, session, 3, opening)
    dispatcher = get_dispatcher(app)
    arrival = Arrival("qstash", datetime.now(UTC))
    assert {dispatcher.arm(row.id, arrival).result for row in rows} == {ArmResult.ARMED}
    close(app)
    for row in rows:
        again = reload(session, row)
        assert (again.status, again.claimed_by, again.book_sent_at) == ("pending", None, None)
        assert "shutting down" in again.error_message
    assert sandbox.arrivals() == []
    assert sorted(a.action for a in announced) == ["released"] * 3
