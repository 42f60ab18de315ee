"""Scenario: AimHarder answers 5xx, times out, or answers slowly; both paths, real HTTP.

Fault: the sandbox's `error_500`, `timeout` (it books, then holds the answer past the client's
timeout) and `slow` (answers late but within the timeout) faults on `/api/book`.
Must hold: each prebooking ends booked exactly once (or failed with a clear reason), never
double booked. On the QStash path a retryable failure answers 503 and QStash's retry books it;
the uncertain case (the request may have booked) asks AimHarder's listing before booking again.
"""

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import CRON_SECRET
from tests.reliability.helpers import DAY, create, record_deliveries, store_cookies, wait_status
from tests.reliability.stack import CRON_URL, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]
EMAIL = "fault@example.com"
CLIENT_TIMEOUT_S = 1.0


@pytest.fixture
def app_overrides():
    return {"AIMHARDER_TIMEOUT_S": CLIENT_TIMEOUT_S}


def deliver_with_fault(live_app, qstash_server, sandbox, mode, count, delay_ms=None):
    """Create a prebooking opening in ~1.2 s with the fault armed; wait until QStash is done."""
    recorder = record_deliveries(live_app)
    client = live_app.test_client()
    store_cookies(client, EMAIL)
    opens = datetime.now(UTC) + timedelta(seconds=1.2)
    sandbox.add_class("4001", DAY, opens_at=opens, capacity=5)
    sandbox.set_fault(mode, count=count, delay_ms=delay_ms)
    created = create(client, EMAIL, opens, "4001")
    assert qstash_server.wait_idle(timeout=30)
    return created, [status for _, _, status in recorder.seen], client


def test_a_5xx_answers_503_and_the_qstash_retry_books_once(live_app, qstash_server, sandbox):
    created, statuses, client = deliver_with_fault(live_app, qstash_server, sandbox, "error_500", 1)
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert statuses == [503, 200]
    assert (done["status"], done["result"]["outcome"]) == ("completed", "booked")
    assert [a["status"] for a in sandbox.arrivals()] == [500, 200]
    assert len(sandbox.bookings()) == 1


def test_a_timeout_after_booking_is_confirmed_from_the_listing_not_booked_again(
    live_app, qstash_server, sandbox
):
    created, statuses, client = deliver_with_fault(
        live_app, qstash_server, sandbox, "timeout", 1, delay_ms=int(CLIENT_TIMEOUT_S * 3000)
    )
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert statuses == [503, 200]
    assert (done["status"], done["result"]["outcome"]) == ("completed", "already_booked")
    assert len(sandbox.arrivals()) == 1, "the retry sent the booking again instead of asking"
    assert len(sandbox.bookings()) == 1


def test_a_slow_answer_within_the_timeout_books_once_without_retry(
    live_app, qstash_server, sandbox
):
    created, statuses, client = deliver_with_fault(
        live_app, qstash_server, sandbox, "slow", 1, delay_ms=int(CLIENT_TIMEOUT_S * 500)
    )
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert statuses == [200]
    assert (done["status"], done["result"]["outcome"]) == ("completed", "booked")
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1


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
