"""Real processes: overlapping ticks on PostgreSQL, and a worker killed mid-booking."""

import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aimharder_sandbox.testing import run_sandbox
from flask_app.core.dispatch import get_dispatcher
from flask_app.models import Prebooking
from tests.conftest import CRON_SECRET
from tests.factories import BOX_ID, booking_data, make_prebooking, store_session
from tests.fakes import FakeClock
from tests.legacy_cron import workers

URL = "/api/cron/prebooking-scheduler"
PROCESSES = 4
TICKS_PER_PROCESS = 2
ROWS = 40
SPAWN = multiprocessing.get_context("spawn")


def rows_in(app):
    with app.extensions["db"].session() as session:
        return session.scalars(select(Prebooking)).all()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_overlapping_ticks_in_several_processes_book_each_prebooking_once(
    app, db_url, fernet_key, tmp_path
):
    with app.extensions["db"].session() as session:
        store_session(app, session)
        for _ in range(ROWS):
            row = make_prebooking(session)
            row.booking_data = booking_data(class_id=row.id)
            session.commit()
    barrier = SPAWN.Barrier(PROCESSES)
    outs = [tmp_path / f"{n}.json" for n in range(PROCESSES)]
    procs = [
        SPAWN.Process(
            target=workers.overlapping_ticks,
            args=(db_url, fernet_key, barrier, TICKS_PER_PROCESS, str(out), 50),
        )
        for out in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    results = [json.loads(out.read_text()) for out in outs]
    booked = Counter(class_id for r in results for class_id in r["booked"])
    reports = [report for r in results for report in r["reports"]]
    assert len(booked) == ROWS and set(booked.values()) == {1}, "a prebooking was booked twice"
    assert sum(report["claimed"] for report in reports) == ROWS
    assert sum(report["errors"] for report in reports) == 0
    rows = rows_in(app)
    assert {r.status for r in rows} == {"completed"} and {r.claim_count for r in rows} == {1}
    assert {r.executed_by for r in rows} == {"cron"}


@pytest.fixture
def sandbox():
    with run_sandbox() as running:
        running.set_box_id(BOX_ID)  # the prebookings' booking_data.box_id: the listing answers
        yield running


@pytest.fixture
def clock():
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def app_overrides(sandbox, clock):
    # The real AimHarder client, over HTTP, against the sandbox.
    return {"AIMHARDER_CLIENT": None, "AIMHARDER_BASE_URL": sandbox.url, "CLOCK": clock}


@pytest.fixture
def real_app(app):
    yield app
    app.extensions["executor"].client.close()


def wait_for(predicate, what, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def kill_mid_booking(app, db_url, fernet_key, sandbox, *, aimharder_booked):
    """Start a tick in a child process, SIGKILL it while it books; return the prebooking."""
    with app.extensions["db"].session() as session:
        store_session(app, session)
        row = make_prebooking(session, available_at=datetime.now(UTC) - timedelta(seconds=1))
    data = row.booking_data
    sandbox.add_class(data["class_id"], data["day"], opens_at=None, capacity=5)
    entered = None if aimharder_booked else SPAWN.Event()
    if aimharder_booked:
        sandbox.set_fault("timeout", count=1, delay_ms=600_000)  # books, then never answers
    child = SPAWN.Process(
        target=workers.tick_that_dies, args=(db_url, fernet_key, sandbox.url, entered)
    )
    child.start()
    try:
        if aimharder_booked:
            wait_for(lambda: len(sandbox.bookings()) == 1, "the sandbox to take the booking")
        else:
            assert entered.wait(60), "the child never started booking"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    sandbox.set_fault("none")
    with app.extensions["db"].session() as session:
        dead = session.get(Prebooking, row.id)
        assert dead.status == "loaded" and dead.book_sent_at is not None
    return row


def tick(app):
    response = app.test_client().post(URL, headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert response.status_code == 200
    return response.json


@pytest.mark.slow
def test_a_worker_killed_after_aimharder_booked_is_recovered_without_double_booking(
    real_app, db_url, fernet_key, sandbox, clock
):
    app = real_app
    row = kill_mid_booking(app, db_url, fernet_key, sandbox, aimharder_booked=True)
    assert tick(app)["due"] == 0  # the dead worker's lease (1 s) is still running
    clock.current = datetime.now(UTC) + timedelta(seconds=5)  # ... and now it has run out
    body = tick(app)
    get_dispatcher(app).drain()
    assert (body["due"], body["recovered"], body["claimed"]) == (1, 1, 1)
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1  # asked, did not book
    (done,) = rows_in(app)
    assert (done.id, done.status, done.result["outcome"]) == (row.id, "completed", "already_booked")
    assert done.claim_count == 2


@pytest.mark.slow
def test_a_worker_killed_before_aimharder_saw_the_request_is_recovered_and_books_once(
    real_app, db_url, fernet_key, sandbox, clock
):
    app = real_app
    row = kill_mid_booking(app, db_url, fernet_key, sandbox, aimharder_booked=False)
    assert sandbox.arrivals() == []
    clock.current = datetime.now(UTC) + timedelta(seconds=5)
    body = tick(app)
    get_dispatcher(app).drain()
    assert (body["due"], body["recovered"], body["claimed"]) == (1, 1, 1)
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1
    (done,) = rows_in(app)
    assert (done.id, done.status, done.result["outcome"]) == (row.id, "completed", "booked")
    assert tick(app)["due"] == 0  # and nothing is left for later ticks


@pytest.mark.slow
@pytest.mark.parametrize("leader", [True, False], ids=["leader", "ranks-only"])
def test_overlapping_ticks_on_four_workers_book_one_class_in_creation_order(
    app, db_url, fernet_key, sandbox, leader
):
    """30 due in one class, 4 processes ticking at once: the sandbox receives them FIFO."""
    opened = datetime.now(UTC) - timedelta(seconds=30)
    emails = [f"fifo{i:02d}@example.com" for i in range(30)]
    with app.extensions["db"].session() as session:
        for i, email in enumerate(emails):
            store_session(app, session, email, {"amhrdrauth": email})
            created = opened - timedelta(hours=1) + timedelta(seconds=i)
            make_prebooking(session, user_email=email, available_at=opened, created_at=created)
    sandbox.add_class("1001", "20261130", opens_at=None, capacity=30)
    barrier = SPAWN.Barrier(PROCESSES)
    procs = [
        SPAWN.Process(
            target=workers.fifo_tick, args=(db_url, fernet_key, sandbox.url, barrier, leader)
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    arrivals = sorted(sandbox.arrivals(), key=lambda a: a["at_ns"])
    assert [a["user"] for a in arrivals] == emails  # once each, oldest request first
    assert {r.status for r in rows_in(app)} == {"completed"}
