"""Outbound calls are bounded: a QStash that accepts and never answers stalls nothing.

The SDK's own read timeout is 600 s; the gateway gives it explicit connect/read timeouts, so
create and cancel answer within 2 s (the default 0.5 s + 1 s), and a publish that timed out
is stored on the prebooking for the relay to publish again.
"""

import time
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.config import defaults
from tests.factories import make_prebooking, reload
from tests.hanging import hanging_server

#: What the issue promises a user whatever QStash does.
ANSWER_WITHIN_S = 2.0


@pytest.fixture
def hung():
    with hanging_server() as server:
        yield server


@pytest.fixture
def app_overrides(hung):
    return {"QSTASH_URL": hung.url, "QSTASH_ENABLED": True}


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_default_timeouts_fit_inside_the_promise():
    found = defaults()
    assert found["QSTASH_CONNECT_TIMEOUT_S"] + found["QSTASH_READ_TIMEOUT_S"] < ANSWER_WITHIN_S


def test_create_answers_within_2_s_and_keeps_the_prebooking_for_the_relay(
    client, auth, hung, session
):
    opening = datetime.now(UTC) + timedelta(hours=2)
    body = {
        "user_email": "ana@example.com",
        "available_at": opening.isoformat(),
        "booking_data": {"box": "b", "class_id": "1", "day": "20261130"},
    }
    resp, took = timed(lambda: client.post("/api/prebookings", json=body, headers=auth))
    assert resp.status_code == 201
    assert took < ANSWER_WITHIN_S
    assert hung.accepted == 1  # it did try QStash, once (no SDK retries)
    row = reload(session, resp.json["id"])
    assert row is not None and row.qstash_message_id is None
    assert row.qstash_error is not None and "QStash unreachable" in row.qstash_error


def test_cancel_answers_within_2_s(client, auth, session, hung):
    row = make_prebooking(session, qstash_message_id="msg_hung")
    resp, took = timed(lambda: client.delete(f"/api/prebookings/{row.id}", headers=auth))
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    assert took < ANSWER_WITHIN_S
    assert hung.accepted == 1
