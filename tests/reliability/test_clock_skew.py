"""Scenario: QStash's clock and the app's disagree, end to end through qstash_dev.

Fault: qstash_dev signs with its clock a few seconds ahead, a minute behind, or far ahead
(`clock_offset_s`), and a delivery arrives seconds before the window by the app's clock.
Must hold: within tolerance (5 s ahead; behind by less than the token's 5 min) deliveries
verify and book once, never before `available_at` by the app's clock (the webhook waits);
beyond tolerance → 401, QStash retries, and the retry (clocks agreeing again) books it once.
"""

from datetime import UTC, datetime, timedelta

import pytest
import qstash

from qstash_dev.testing import run_server
from tests.reliability.helpers import DAY, create, record_deliveries, store_cookies, wait_status
from tests.reliability.stack import EXECUTE_URL, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]
EMAIL = "skew@example.com"


@pytest.fixture
def qstash_server():
    # Slow enough retries for the test to fix the clock in between: the app asks for
    # `200 * (1 + retried)` ms, scaled ×10 here, so the first retry comes after ~2 s.
    with run_server(retry_delay_scale=10) as srv:
        yield srv


def book_with_offset(live_app, qstash_server, sandbox, offset_s, class_id):
    qstash_server.broker.clock_offset_s = offset_s
    recorder = record_deliveries(live_app)
    client = live_app.test_client()
    store_cookies(client, EMAIL)
    opens = datetime.now(UTC) + timedelta(seconds=2.5)
    sandbox.add_class(class_id, DAY, opens_at=opens, capacity=5)
    created = create(client, EMAIL, opens, class_id)
    # A second delivery that QStash (its clock ahead) sends a couple of seconds early.
    sdk = qstash.QStash(qstash_server.token, base_url=qstash_server.url, retry=False)
    body = {"prebookingId": created["id"], "userEmail": EMAIL, "scheduledAt": opens.isoformat()}
    sdk.message.publish_json(url=live_app.config["APP_BASE_URL"] + EXECUTE_URL, body=body)
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert qstash_server.wait_idle(timeout=20)
    return done, opens, recorder


@pytest.mark.parametrize("offset_s", [3.0, -60.0], ids=["ahead-3s", "behind-60s"])
def test_deliveries_within_the_tolerance_verify_and_book_once_never_early(
    live_app, qstash_server, sandbox, offset_s
):
    done, opens, recorder = book_with_offset(live_app, qstash_server, sandbox, offset_s, "3001")
    assert (done["status"], done["executed_by"]) == ("completed", "qstash")
    assert sorted(status for _, _, status in recorder.seen) == [200, 200]
    [arrival] = sandbox.arrivals()
    assert arrival["at_ns"] >= int(opens.timestamp() * 1e9)  # the early delivery waited
    assert arrival["book_state"] == 1 and len(sandbox.bookings()) == 1


def test_a_delivery_beyond_the_tolerance_is_refused_and_its_retry_books_it(
    live_app, qstash_server, sandbox
):
    qstash_server.broker.clock_offset_s = 30.0
    recorder = record_deliveries(live_app)
    client = live_app.test_client()
    store_cookies(client, EMAIL)
    opens = datetime.now(UTC) + timedelta(seconds=1.5)
    sandbox.add_class("3002", DAY, opens_at=opens, capacity=5)
    created = create(client, EMAIL, opens, "3002")
    wait_until(lambda: recorder.seen, "the first delivery", timeout_s=15, every_s=0.005)
    qstash_server.broker.clock_offset_s = 0.0  # the clocks agree again before the retry
    done = wait_status(client, created["id"], {"completed", "failed"})
    assert (done["status"], done["executed_by"]) == ("completed", "qstash")
    wait_until(lambda: len(recorder.seen) == 2, "the retry's response", timeout_s=10)
    assert [status for _, _, status in recorder.seen] == [401, 200]
    assert [headers.get("Upstash-Retried") for headers, _, _ in recorder.seen] == ["0", "1"]
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1
