"""Scenario: AimHarder faults met by the cron path (a tick, or the DLQ handing back to cron)."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import CRON_SECRET
from tests.reliability.helpers import DAY, create, store_cookies, wait_status
from tests.reliability.stack import CRON_URL, wait_until
from tests.reliability.test_aimharder_faults import (
    CLIENT_TIMEOUT_S,
    EMAIL,
    app_overrides,  # noqa: F401 (fixture)
    deliver_with_fault,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


def test_a_5xx_that_outlasts_the_dispatchers_re_sends_is_released_and_a_tick_books_it_once(
    live_app, qstash_server, sandbox
):
    created, statuses, client = deliver_with_fault(
        live_app, qstash_server, sandbox, "error_500", None
    )
    assert statuses == [200]  # armed: QStash is done with it, the app retries
    wait_until(lambda: len(sandbox.arrivals()) == 4, "the first send and its 3 re-sends")
    released = wait_status(client, created["id"], {"pending"})
    assert (released["executed_by"], released["error_message"]) == (None, "HTTP 500")
    sandbox.set_fault("none")
    tick = client.post(CRON_URL, headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert tick.status_code == 200 and tick.json["claimed"] == 1
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["executed_by"]) == ("completed", "cron")
    assert [a["status"] for a in sandbox.arrivals()] == [500] * 4 + [200]
    assert len(sandbox.bookings()) == 1


def test_a_5xx_met_by_a_cron_tick_is_sent_again_at_once_and_books_once(live_app, sandbox):
    client, created = due_for_cron(live_app, sandbox)
    sandbox.set_fault("error_500", count=1)
    first = client.post(CRON_URL, headers=AUTH).json
    assert first["claimed"] == 1
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["result"]["outcome"]) == ("completed", "booked")
    assert [a["status"] for a in sandbox.arrivals()] == [500, 200]
    assert len(sandbox.bookings()) == 1


def test_a_timeout_met_by_a_cron_tick_is_released_and_the_next_tick_asks_before_booking(
    live_app, sandbox
):
    client, created = due_for_cron(live_app, sandbox)
    sandbox.set_fault("timeout", count=1, delay_ms=int(CLIENT_TIMEOUT_S * 3000))
    assert client.post(CRON_URL, headers=AUTH).json["claimed"] == 1
    released = wait_status(client, created["id"], {"pending"})  # sent, no answer: uncertain
    assert released["executed_by"] is None
    assert client.post(CRON_URL, headers=AUTH).json["claimed"] == 1
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["result"]["outcome"]) == ("completed", "already_booked")
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1


AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}


def due_for_cron(live_app, sandbox):
    """A prebooking whose window just opened, for the cron path alone; (client, its JSON)."""
    client = live_app.test_client()
    live_app.config["QSTASH_ENABLED"] = False
    store_cookies(client, EMAIL)
    sandbox.add_class("4002", DAY, opens_at=None, capacity=5)
    created = create(client, EMAIL, datetime.now(UTC) + timedelta(seconds=0.2), "4002")
    wait_until(lambda: datetime.now(UTC).isoformat() > created["available_at"], "the opening")
    return client, created
