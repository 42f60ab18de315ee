"""Scenario: the gunicorn worker holding a QStash delivery's claim is killed with SIGKILL.

Fault: SIGKILL of the app's worker (i) while the delivery waits for the window to open (the
claim is taken and the booking marked as about to leave, nothing sent), and (ii) after
AimHarder booked but before its answer came back. gunicorn respawns the worker; QStash sees
the connection die and retries; the retry finds the dead worker's claim still leased.
Must hold: no double booking and no lost booking: once the lease runs out, the cron path
recovers the claim, asks AimHarder's listing because the request may have left, and books
(i) or confirms (ii) exactly once. QStash's retry gets a 2xx (nothing ends in the DLQ).
"""

import os
import signal
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import qstash
from sqlalchemy import create_engine

from aimharder_sandbox.state import default_box_id
from aimharder_sandbox.testing import run_sandbox
from flask_app.models import Prebooking
from qstash_dev.testing import run_server
from tests.conftest import API_TOKEN, CRON_SECRET
from tests.reliability.stack import (
    AUTH,
    CRON_AUTH,
    CRON_URL,
    app_env,
    gunicorn,
    private_database,
    wait_until,
)

pytestmark = pytest.mark.slow
DAY = "20261203"
EMAIL = "killed@example.com"
LEASE_S = 2


@pytest.fixture
def stack(tmp_path, fernet_key):
    with (
        private_database() as db_url,
        run_server(retry_delay_scale=0.001) as srv,
        run_sandbox() as sandbox,
    ):
        env = app_env(
            DATABASE_URL=db_url,
            API_TOKEN=API_TOKEN,
            CRON_SECRET=CRON_SECRET,
            SESSION_ENCRYPTION_KEYS=fernet_key,
            QSTASH_ENABLED="true",
            QSTASH_URL=srv.url,
            QSTASH_TOKEN=srv.token,
            QSTASH_LEAD_SECONDS="1",
            AIMHARDER_BASE_URL=sandbox.url,
            CLAIM_LEASE_SECONDS=LEASE_S,
        )
        with gunicorn(env, tmp_path, workers=1) as server:
            engine = create_engine(db_url)
            yield server, srv, sandbox, engine
            engine.dispose()


def status_of(engine, prebooking_id):
    with engine.connect() as conn:
        found = conn.execute(
            Prebooking.__table__.select().where(Prebooking.__table__.c.id == prebooking_id)
        ).one()
    return found


def kill_worker(server):
    [pid] = server.worker_pids()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: server.worker_pids() not in ([], [pid]), "gunicorn to respawn its worker")


def run(stack, *, after_aimharder_booked):
    server, srv, sandbox, engine = stack
    http = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
    cookies = {"amhrdrauth": "cookie-killed"}
    assert http.put(f"/api/sessions/{EMAIL}", json={"cookies": cookies}).status_code == 200
    opens = datetime.now(UTC) + timedelta(seconds=2.5)
    sandbox.add_class("5001", DAY, opens_at=opens, capacity=5)
    if after_aimharder_booked:
        sandbox.set_fault("timeout", count=1, delay_ms=600_000)  # books, never answers
    body = {
        "user_email": EMAIL,
        "available_at": opens.isoformat(),
        "booking_data": {
            "box": "sandbox",
            "box_id": default_box_id("sandbox"),
            "class_id": "5001",
            "day": DAY,
        },
    }
    created = http.post("/api/prebookings", json=body).json()
    if after_aimharder_booked:
        wait_until(lambda: len(sandbox.bookings()) == 1, "AimHarder to take the booking")
    else:
        wait_until(
            lambda: status_of(engine, created["id"]).book_sent_at is not None,
            "the delivery to claim and get ready to fire",
        )
    kill_worker(server)
    dead = status_of(engine, created["id"])
    assert dead.status == "loaded" and dead.claimed_by.startswith("qstash:")
    sandbox.set_fault("none")
    assert srv.wait_idle(timeout=30), "QStash kept retrying"
    sdk = qstash.QStash(srv.token, base_url=srv.url, retry=False)
    assert sdk.dlq.list().messages == [], "the delivery died instead of being answered"
    recovered = {}

    def tick_recovers():
        reply = http.post(CRON_URL, headers=CRON_AUTH)
        assert reply.status_code == 200, reply.text
        recovered.update(
            {
                k: v + recovered.get(k, 0)
                for k, v in reply.json().items()
                if k in ("recovered", "booked")
            }
        )
        return recovered.get("booked", 0) >= 1

    wait_until(tick_recovers, "a cron tick to recover the claim", timeout_s=30, every_s=0.5)
    assert recovered == {"recovered": 1, "booked": 1}
    done = status_of(engine, created["id"])
    assert (done.status, done.executed_by, done.claim_count) == ("completed", "cron", 2)
    assert len(sandbox.bookings()) == 1
    http.close()
    return done, sandbox.arrivals()


def test_a_worker_killed_while_waiting_for_the_opening_is_recovered_and_booked_once(stack):
    done, arrivals = run(stack, after_aimharder_booked=False)
    assert done.result["outcome"] == "booked"
    assert len(arrivals) == 1  # the listing said "not booked", so it was sent once


def test_a_worker_killed_after_aimharder_booked_is_confirmed_not_booked_again(stack):
    done, arrivals = run(stack, after_aimharder_booked=True)
    assert done.result["outcome"] == "already_booked"
    assert len(arrivals) == 1  # the recovery asked the listing instead of booking again
