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


def test_a_5xx_that_outlasts_qstash_retries_goes_to_cron_via_the_dlq_and_books_once(
    live_app, qstash_server, sandbox
):
    created, statuses, client = deliver_with_fault(
        live_app, qstash_server, sandbox, "error_500", None
    )
    assert statuses == [503] * 4  # the first delivery and QStash's 3 retries
    assert wait_status(client, created["id"], {"pending"})["executed_by"] is None
    result = live_app.test_cli_runner().invoke(args=["qstash", "reconcile-dlq"])
    assert '"handed_to_cron": 1' in result.output, result.output
    sandbox.set_fault("none")
    tick = client.post(CRON_URL, headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert tick.status_code == 200 and tick.json["booked"] == 1
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["executed_by"]) == ("completed", "cron")
    assert [a["status"] for a in sandbox.arrivals()] == [500] * 4 + [200]
    assert len(sandbox.bookings()) == 1


@pytest.mark.parametrize("mode", ["error_500", "timeout"])
def test_a_cron_tick_hit_by_a_fault_releases_and_the_next_tick_books_once(live_app, sandbox, mode):
    client = live_app.test_client()
    live_app.config["QSTASH_ENABLED"] = False  # the cron path alone
    store_cookies(client, EMAIL)
    sandbox.add_class("4002", DAY, opens_at=None, capacity=5)
    created = create(client, EMAIL, datetime.now(UTC) + timedelta(seconds=0.2), "4002")
    wait_until(lambda: datetime.now(UTC).isoformat() > created["available_at"], "the opening")
    sandbox.set_fault(mode, count=1, delay_ms=int(CLIENT_TIMEOUT_S * 3000))
    auth = {"Authorization": f"Bearer {CRON_SECRET}"}
    first = client.post(CRON_URL, headers=auth).json
    assert (first["claimed"], first["released"], first["booked"]) == (1, 1, 0)
    second = client.post(CRON_URL, headers=auth).json
    assert (second["claimed"], second["booked"]) == (1, 1)
    outcome = "already_booked" if mode == "timeout" else "booked"
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["result"]["outcome"]) == ("completed", outcome)
    assert len(sandbox.bookings()) == 1
    assert len(sandbox.arrivals()) == (1 if mode == "timeout" else 2)
