"""Scenario: AimHarder answers 5xx, times out, or answers slowly; the QStash path, real HTTP.

Fault: the sandbox's `error_500`, `timeout` (it books, then holds the answer past the client's
timeout) and `slow` (answers late but within the timeout) faults on `/api/book`.
Must hold: each prebooking ends booked exactly once (or failed with a clear reason), never
double booked. A retryable failure answers 503 and QStash's retry books it; the uncertain case
(the request may have booked) asks AimHarder's listing before booking again. The cron path's
scenarios are in tests/legacy_cron/reliability/; with cron off, see tests/e2e/test_qstash_only.py.
"""

from datetime import UTC, datetime, timedelta

import pytest

from tests.reliability.helpers import DAY, create, record_deliveries, store_cookies, wait_status

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
