"""Scenario: the gunicorn worker whose dispatcher holds a QStash delivery's claim is killed.

Fault: SIGKILL of the app's only worker (i) while the armed prebooking waits for its window
(claimed, nothing sent), and (ii) after AimHarder booked but before its answer came back.
QStash already got its 200 when the delivery was armed; gunicorn respawns the worker.
Must hold: no double booking and no lost booking: once the lease runs out, the claim is
recovered (by a cron tick, or by the new worker's sweep), AimHarder's listing is asked when the
request may have left, and it is booked (i) or confirmed (ii) exactly once. Nothing ends in
QStash's DLQ.
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
            lambda: status_of(engine, created["id"]).status == "loaded",
            "the delivery to arm the prebooking",
        )
    kill_worker(server)
    dead = status_of(engine, created["id"])
    assert (dead.status, dead.executed_by) == ("loaded", "qstash")
    assert (dead.book_sent_at is not None) == after_aimharder_booked
    sandbox.set_fault("none")
    assert srv.wait_idle(timeout=30), "QStash kept retrying"
    sdk = qstash.QStash(srv.token, base_url=srv.url, retry=False)
    assert sdk.dlq.list().messages == [], "the delivery died instead of being answered"

    def recovered():
        reply = http.post(CRON_URL, headers=CRON_AUTH)
        assert reply.status_code == 200, reply.text
        return status_of(engine, created["id"]).status == "completed"

    wait_until(recovered, "the claim to be recovered and booked", timeout_s=30, every_s=0.5)
    done = status_of(engine, created["id"])
    assert done.executed_by in ("cron", "fallback") and done.claim_count == 2
    assert len(sandbox.bookings()) == 1
    http.close()
    return done, sandbox.arrivals()


def test_a_worker_killed_while_waiting_for_the_opening_is_recovered_and_booked_once(stack):
    done, arrivals = run(stack, after_aimharder_booked=False)
    assert done.result["outcome"] == "booked"
    assert len(arrivals) == 1  # nothing had left before the kill: sent once, by the recovery


def test_a_worker_killed_after_aimharder_booked_is_confirmed_not_booked_again(stack):
    done, arrivals = run(stack, after_aimharder_booked=True)
    assert done.result["outcome"] == "already_booked"
    assert len(arrivals) == 1  # the recovery asked the listing instead of booking again
