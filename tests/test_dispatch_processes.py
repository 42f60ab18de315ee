"""Real processes sharing one database: one leads a class, the others' members are adopted;
a leader killed before the instant leaves its class to the followers' watchdogs.

What is asserted is what the AimHarder sandbox received (each prebooking once, in creation
order) and who fired it (recorded on each arrival), never durations.
"""

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aimharder_sandbox.testing import run_sandbox
from flask_app.models import Arrival, Prebooking
from tests import dispatch_workers
from tests.factories import booking_data, make_prebooking, store_session

SPAWN = multiprocessing.get_context("spawn")
DAY = "20261130"


@pytest.fixture
def sandbox():
    with run_sandbox() as running:
        yield running


def crowd(app, n, opening):
    """n prebookings of one class, created a second apart; (ids, users) oldest first."""
    ids, users = [], [f"proc{i:02d}" for i in range(n)]
    with app.extensions["db"].session() as session:
        for i, user in enumerate(users):
            email = f"{user}@example.com"
            store_session(app, session, email, {"amhrdrauth": user})
            created = opening - timedelta(hours=1) + timedelta(seconds=i)
            row = make_prebooking(
                session,
                user_email=email,
                available_at=opening,
                created_at=created,
                booking_data=booking_data(day=DAY),
            )
            ids.append(row.id)
    return ids, users


class Worker:
    """A spawned process with its own app and dispatcher (dispatch_workers.arm_and_fire)."""

    def __init__(self, db_url, fernet_key, sandbox, lead_ms):
        self.ready, self.armed, self.ids = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
        self.proc = SPAWN.Process(
            target=dispatch_workers.arm_and_fire,
            args=(db_url, fernet_key, sandbox.url, lead_ms, self.ready, self.ids, self.armed),
        )
        self.proc.start()

    def wait_ready(self):
        assert self.ready.wait(120), "the worker never started its app"

    def arm(self, ids):
        self.ids.put(ids)
        assert self.armed.wait(60), "the worker never armed its prebookings"


def workers(db_url, fernet_key, sandbox, *leads_ms):
    """Processes started and up (the slow part), before any prebooking exists."""
    started = [Worker(db_url, fernet_key, sandbox, lead) for lead in leads_ms]
    for worker in started:
        worker.wait_ready()
    return started


def fired_by(app):
    with app.extensions["db"].session() as session:
        return {a.prebooking_id: a.detail["fired_by"] for a in session.scalars(select(Arrival))}


def holders(app, ids):
    with app.extensions["db"].session() as session:
        rows = session.scalars(select(Prebooking).where(Prebooking.id.in_(ids)))
        return {(r.claimed_by, r.book_sent_at is None) for r in rows}


def received(sandbox):
    return [a["user"] for a in sorted(sandbox.arrivals(), key=lambda a: a["at_ns"])]


@pytest.mark.slow
def test_one_process_leads_the_class_and_fires_every_process_members_in_order(
    app, db_url, fernet_key, sandbox
):
    first, second = workers(db_url, fernet_key, sandbox, 1000, 1000)
    opening = datetime.now(UTC) + timedelta(seconds=8)
    sandbox.add_class("1001", DAY, opens_at=opening, capacity=20)
    ids, users = crowd(app, 20, opening)
    first.arm(ids[0::2])
    second.arm(ids[1::2])
    procs = [first.proc, second.proc]
    for proc in procs:
        proc.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert received(sandbox) == users  # each once, oldest first, across both processes
    assert {a["book_state"] for a in sandbox.arrivals()} == {1}  # none too early
    assert set(fired_by(app).values()) == {"leader"}


@pytest.mark.slow
def test_a_leader_killed_before_the_instant_leaves_its_class_to_the_watchdog(
    app, db_url, fernet_key, sandbox
):
    # The first elects (and adopts) 5 s ahead; the second only 1 s ahead: it follows.
    leading, following = workers(db_url, fernet_key, sandbox, 5000, 1000)
    opening = datetime.now(UTC) + timedelta(seconds=10)
    sandbox.add_class("1001", DAY, opens_at=opening, capacity=20)
    ids, users = crowd(app, 20, opening)
    leading.arm(ids[0::2])
    following.arm(ids[1::2])
    leader, follower = leading.proc, following.proc
    deadline = time.monotonic() + 30
    while len(holders(app, ids)) != 1:  # every member adopted by the leader, none sent
        assert time.monotonic() < deadline, "the leader never adopted the class"
        time.sleep(0.05)
    [(_, unsent)] = holders(app, ids)
    assert unsent
    os.kill(leader.pid, signal.SIGKILL)
    leader.join(30)
    follower.join(60)
    assert follower.exitcode == 0
    assert received(sandbox) == users  # the follower fired all of them, its own and the dead's
    assert set(fired_by(app).values()) == {"watchdog"}
