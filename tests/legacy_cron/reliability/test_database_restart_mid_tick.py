"""Scenario: PostgreSQL restarts in the middle of a cron tick, and is down for a tick.

Fault: a private PostgreSQL cluster (never the shared one) is restarted (`pg_ctl restart -m
fast`, every connection killed) while a tick is booking five prebookings against a slow
AimHarder; later it is stopped for one tick and started again.
Must hold: the tick answers (200 when it ran, 503 when it could not read the database);
pooled connections recover by themselves (`pool_pre_ping`); later ticks book what was left,
each prebooking exactly once at AimHarder, none lost, none asked twice.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aimharder_sandbox.testing import run_sandbox
from flask_app import close, create_app
from flask_app.models import Prebooking
from tests.conftest import API_TOKEN, CRON_SECRET
from tests.factories import BOX_ID, booking_data, make_prebooking, store_session
from tests.reliability.stack import (
    CRON_AUTH,
    CRON_URL,
    private_cluster,
    private_database,
    wait_until,
)

pytestmark = pytest.mark.slow
ROWS = 5
LEASE_S = 1


@pytest.fixture
def cluster():
    with private_cluster() as running:
        yield running


@pytest.fixture
def stack(cluster, fernet_key):
    with private_database(cluster.admin_url) as db_url, run_sandbox() as sandbox:
        sandbox.set_box_id(BOX_ID)  # the prebookings' box_id: a recovery can ask the listing
        app = create_app(
            {
                "DATABASE_URL": db_url,
                "API_TOKEN": API_TOKEN,
                "CRON_SECRET": CRON_SECRET,
                "SESSION_ENCRYPTION_KEYS": fernet_key,
                "AIMHARDER_BASE_URL": sandbox.url,
                "AIMHARDER_TIMEOUT_S": 5.0,
                "CLAIM_LEASE_SECONDS": LEASE_S,
                "CRON_STAGGER_MS": 150,
            }
        )
        yield app, sandbox
        app.extensions["executor"].client.close()
        close(app)


def seed(app, sandbox):
    past = datetime.now(UTC) - timedelta(seconds=1)
    with app.extensions["db"].session() as session:
        store_session(app, session)
        for n in range(ROWS):
            make_prebooking(session, available_at=past, booking_data=booking_data(class_id=f"6{n}"))
            sandbox.add_class(f"6{n}", "20261130", opens_at=None, capacity=5)


def tick(app):
    return app.test_client().post(CRON_URL, headers=CRON_AUTH)


def statuses(app):
    with app.extensions["db"].session() as session:
        return Counter(session.scalars(select(Prebooking.status)).all())


def test_a_restart_mid_booking_loses_nothing_and_books_each_prebooking_once(stack, cluster):
    app, sandbox = stack
    seed(app, sandbox)
    sandbox.set_fault("slow", delay_ms=800)  # every booking takes 0.8 s: answers still due
    first = tick(app)
    assert first.status_code == 200 and first.json["claimed"] == ROWS  # armed, answered
    wait_until(lambda: sandbox.arrivals(), "the first booking to reach AimHarder")
    cluster.restart()  # while the dispatcher waits for answers and records outcomes
    sandbox.set_fault("none")

    def settled():
        reply = tick(app)
        assert reply.status_code == 200, reply.json  # connections recovered (pool_pre_ping)
        return statuses(app) == {"completed": ROWS}

    wait_until(settled, "later ticks to book what was left", timeout_s=60, every_s=0.5)
    booked = Counter(b["class_id"] for b in sandbox.bookings())
    asked = Counter(a["class_id"] for a in sandbox.arrivals())
    assert len(booked) == ROWS and set(booked.values()) == {1}, "double or lost booking"
    assert set(asked.values()) == {1}, "AimHarder was asked twice for one prebooking"


def test_a_tick_while_the_database_is_down_answers_503_and_the_next_one_books(stack, cluster):
    app, sandbox = stack
    seed(app, sandbox)
    assert statuses(app) == {"pending": ROWS}  # the pool holds live connections now
    cluster.stop()
    try:
        down = tick(app)
    finally:
        cluster.start()
    assert down.status_code == 503 and "did not run" in down.json["error"]
    up = tick(app)
    assert up.status_code == 200 and up.json["claimed"] == ROWS
    assert app.extensions["dispatcher"].wait_idle(30)
    assert statuses(app) == {"completed": ROWS}
    assert len(sandbox.arrivals()) == ROWS == len(sandbox.bookings())
