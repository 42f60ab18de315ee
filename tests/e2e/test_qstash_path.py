"""Create → qstash_dev delivers (real HTTP, real signatures) → booked at the AimHarder sandbox."""

import time
from datetime import UTC, datetime, timedelta

import pytest
import qstash
from qstash.errors import QStashError

from flask_app.core.execution import get_executor
from flask_app.models import Prebooking
from tests.conftest import API_TOKEN
from tests.e2e.conftest import closed_port
from tests.factories import booking_data

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
EMAIL = "ana@example.com"
DAY = "20261130"


def sdk(srv):
    return qstash.QStash(srv.token, base_url=srv.url, retry=False)


def create(client, available_at, email=EMAIL, class_id="1001"):
    body = {
        "user_email": email,
        "available_at": available_at.isoformat(),
        "booking_data": booking_data(class_id=class_id, day=DAY),
    }
    resp = client.post("/api/prebookings", json=body, headers=AUTH)
    assert resp.status_code == 201, resp.json
    return resp.json


def store_cookies(client, email=EMAIL):
    cookies = {"amhrdrauth": "cookie-" + email.split("@")[0]}
    assert (
        client.put(f"/api/sessions/{email}", json={"cookies": cookies}, headers=AUTH).status_code
        == 200
    )


def wait_for_status(client, prebooking_id, statuses, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = client.get(f"/api/prebookings/{prebooking_id}", headers=AUTH).json
        if row["status"] in statuses:
            return row
        time.sleep(0.05)
    raise AssertionError(f"prebooking still {row['status']} after {timeout} s")


def test_created_prebooking_is_delivered_and_booked_at_the_opening(live_app, sandbox):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=2.5)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    store_cookies(client)
    created = create(client, opens)
    assert created["qstash_message_id"].startswith("msg")
    row = wait_for_status(client, created["id"], {"completed", "failed"})
    assert (row["status"], row["executed_by"]) == ("completed", "qstash")
    assert row["result"]["outcome"] == "booked"
    [arrival] = sandbox.arrivals()
    assert arrival["at_ns"] >= int(opens.timestamp() * 1e9)  # never early
    assert arrival["book_state"] == 1
    # One connection: the firing line's prepared request. No warm-up probe reached AimHarder
    # (it cost ~2 ms of CPU per delivery and a request to the box just before its burst).
    assert sandbox.connections() == 1


def test_cancelled_prebooking_loses_its_message_and_is_never_booked(
    live_app, qstash_server, sandbox
):
    client = live_app.test_client()
    # Due QSTASH_LEAD_SECONDS (1 s) before, floored to a whole second by QStash: at least
    # 2.2 s to look the message up and cancel it before it is delivered and claimed.
    opens = datetime.now(UTC) + timedelta(seconds=4.2)
    store_cookies(client)
    created = create(client, opens)
    message_id = created["qstash_message_id"]
    assert sdk(qstash_server).message.get(message_id).message_id == message_id
    assert client.delete(f"/api/prebookings/{created['id']}", headers=AUTH).status_code == 200
    with pytest.raises(QStashError, match="404"):
        sdk(qstash_server).message.get(message_id)
    time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds()) + 0.5)
    assert sandbox.arrivals() == []


def test_duplicate_deliveries_of_one_prebooking_book_once(live_app, qstash_server, sandbox):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=1.5)
    store_cookies(client)
    created = create(client, opens)
    body = {"prebookingId": created["id"], "userEmail": EMAIL, "scheduledAt": opens.isoformat()}
    url = live_app.config["APP_BASE_URL"] + "/api/qstash/prebooking-execute"
    sdk(qstash_server).message.publish_json(url=url, body=body)  # a second, signed delivery
    wait_for_status(client, created["id"], {"completed"})
    assert qstash_server.wait_idle(timeout=10)
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1


def test_qstash_unreachable_at_create_still_saves_and_the_cron_path_books_it(live_app, sandbox):
    live_app.config["QSTASH_URL"] = f"http://127.0.0.1:{closed_port()}"
    from flask_app.qstash import gateway

    gateway.init_app(live_app)  # a Gateway pointed at the closed port
    client = live_app.test_client()
    store_cookies(client)
    opens = datetime.now(UTC) + timedelta(seconds=0.5)
    created = create(client, opens)
    assert created["qstash_message_id"] is None
    with live_app.extensions["db"].session() as session:
        assert session.get(Prebooking, created["id"]).qstash_error.startswith("publish: ")
    attempt = get_executor(live_app).attempt(created["id"], path="cron")
    assert attempt.won and attempt.outcome.value == "booked"
    assert len(sandbox.bookings()) == 1


def test_beyond_max_delay_is_published_by_the_relay_when_in_range(live_app, qstash_server):
    live_app.config["QSTASH_MAX_DELAY"] = timedelta(seconds=10)
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=60)
    created = create(client, opens)
    assert created["qstash_message_id"] is None
    runner = live_app.test_cli_runner()
    assert '"published": 0' in runner.invoke(args=["qstash", "relay"]).output
    from flask_app.qstash import relay

    with live_app.app_context(), live_app.extensions["db"].session() as session:
        report = relay.relay(session, opens - timedelta(seconds=8))
    assert report.published == 1
    message_id = client.get(f"/api/prebookings/{created['id']}", headers=AUTH).json[
        "qstash_message_id"
    ]
    message = sdk(qstash_server).message.get(message_id)
    assert message.not_before == int(opens.timestamp() - 1) * 1000


class TestKeyRotation:
    @pytest.fixture
    def qstash_keys(self):
        # QStash rotated: it signs with what the app still knows as its *next* key.
        from flask_app.config import DEV_QSTASH_NEXT_SIGNING_KEY

        return {
            "current_signing_key": DEV_QSTASH_NEXT_SIGNING_KEY,
            "next_signing_key": "sig_" + "c" * 28,
        }

    def test_deliveries_signed_with_the_next_key_still_execute(self, live_app, sandbox):
        client = live_app.test_client()
        store_cookies(client)
        created = create(client, datetime.now(UTC) + timedelta(seconds=1.2))
        row = wait_for_status(client, created["id"], {"completed", "failed"})
        assert (row["status"], row["executed_by"]) == ("completed", "qstash")
        assert len(sandbox.bookings()) == 1


def test_shadow_deliveries_are_verified_and_recorded_and_book_nothing(
    live_app, qstash_server, sandbox
):
    from flask_app.core import events

    live_app.config.update(QSTASH_ENABLED=False, QSTASH_SHADOW=True)
    client = live_app.test_client()
    store_cookies(client)
    seen = []
    with events.attempt_finished.connected_to(lambda sender, attempt, **_: seen.append(attempt)):
        created = create(client, datetime.now(UTC) + timedelta(seconds=1.2))
        assert created["qstash_message_id"]
        assert qstash_server.wait_idle(timeout=10)
    assert [(a.path, a.action.value, a.message_id) for a in seen] == [
        ("shadow", "shadow", created["qstash_message_id"])
    ]
    assert seen[0].lateness_ms < 0  # arrived before the opening, as designed
    row = client.get(f"/api/prebookings/{created['id']}", headers=AUTH).json
    assert row["status"] == "pending" and sandbox.arrivals() == []
