"""The QStash webhook: signatures (real JWTs), body validation and the response mapping."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY as CURRENT
from flask_app.config import DEV_QSTASH_NEXT_SIGNING_KEY as NEXT
from flask_app.core import events
from flask_app.core.dispatch import DispatchSettings, get_dispatcher
from qstash_dev.signing import sign
from tests.factories import make_prebooking, reload, store_session
from tests.fake_gateway import FakeGateway
from tests.fakes import FakeClock, result

BASE = "https://prebook.example.com"
PATH = "/api/qstash/prebooking-execute"
URL = BASE + PATH
NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=3))


@pytest.fixture
def app_overrides(clock):
    return {
        "GYM_CLOCK_MARGIN_MS": 0.0,  # fire at the opening by the test clock
        "QSTASH_GATEWAY": FakeGateway(),
        "QSTASH_ENABLED": True,
        "APP_BASE_URL": BASE,
        "CLOCK": clock,
    }


@pytest.fixture
def due(app, session):
    store_session(app, session)
    return make_prebooking(session, available_at=NOW, qstash_message_id="msg_1")


def body_for(row):
    return json.dumps(
        {
            "prebookingId": row.id,
            "userEmail": row.user_email,
            "scheduledAt": row.available_at.isoformat(),
        }
    ).encode()


def deliver(client, raw, *, key=CURRENT, url=URL, signed=None, message_id="msg_1", retried=0):
    headers = {
        "Content-Type": "application/json",
        "Upstash-Message-Id": message_id,
        "Upstash-Retried": str(retried),
    }
    token = sign(key, url, raw if signed is None else signed)
    if token:
        headers["Upstash-Signature"] = token
    return client.post(PATH, data=raw, headers=headers)


def drain(app):
    """Let the dispatcher fire what the deliveries armed (the test clock jumps to each step)."""
    get_dispatcher(app).drain()


def test_a_signed_delivery_arms_answers_200_at_once_and_books_at_the_instant(
    app, client, session, due, booking_client
):
    resp = deliver(client, body_for(due))
    assert resp.status_code == 200
    assert resp.json == {"prebookingId": due.id, "action": "armed", "fire_at": NOW.isoformat()}
    assert booking_client.calls == [] and reload(session, due).status == "loaded"
    drain(app)
    assert len(booking_client.calls) == 1
    row = reload(session, due)
    assert (row.status, row.executed_by) == ("completed", "qstash")


def test_delivery_signed_with_the_next_key_is_accepted_during_rotation(client, due):
    assert deliver(client, body_for(due), key=NEXT).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    ["forged_key", "tampered_body", "wrong_url", "trailing_slash", "expired", "missing"],
)
def test_bad_signatures_get_401_and_book_nothing(client, due, booking_client, tamper):
    raw = body_for(due)
    headers = {"Content-Type": "application/json"}
    if tamper == "forged_key":
        headers["Upstash-Signature"] = sign("sig_" + "x" * 28, URL, raw)
    elif tamper == "tampered_body":
        headers["Upstash-Signature"] = sign(CURRENT, URL, raw)
        raw = raw.replace(b'"prebookingId"', b'"prebookingId" ')
    elif tamper == "wrong_url":
        headers["Upstash-Signature"] = sign(CURRENT, "https://evil.example.com" + PATH, raw)
    elif tamper == "trailing_slash":
        headers["Upstash-Signature"] = sign(CURRENT, URL + "/", raw)
    elif tamper == "expired":
        headers["Upstash-Signature"] = sign(CURRENT, URL, raw, now_s=time.time() - 400)
    resp = client.post(PATH, data=raw, headers=headers)
    assert resp.status_code == 401
    assert "error" in resp.json
    assert booking_client.calls == []


@pytest.mark.parametrize("missing", ["QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"])
def test_webhook_fails_closed_without_signing_keys(app, client, due, booking_client, missing):
    app.config[missing] = None
    assert deliver(client, body_for(due)).status_code == 401
    assert booking_client.calls == []


def test_signature_is_checked_against_app_base_url_not_the_request_host(client, due):
    # The test client calls http://localhost/...; QStash signed the public URL.
    assert deliver(client, body_for(due), url="http://localhost" + PATH).status_code == 401
    assert deliver(client, body_for(due), url=URL).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"prebookingId": "x", "userEmail": "a@b.c", "scheduledAt": "soon"}'],
)
def test_signed_but_unreadable_body_is_non_retryable_489(client, booking_client, raw):
    resp = deliver(client, raw)
    assert resp.status_code == 489
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"
    assert resp.json["error"].startswith("invalid delivery body")
    assert booking_client.calls == []


def test_cancelled_prebooking_delivered_anyway_answers_200_and_books_nothing(
    app, client, session, due, booking_client
):
    client.delete(f"/api/prebookings/{due.id}", headers={"Authorization": "Bearer test-api-token"})
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        resp = deliver(client, body_for(due))
    assert resp.status_code == 200 and resp.json["action"] == "lost_claim"
    drain(app)
    assert booking_client.calls == []
    assert [a.action.value for a in seen] == ["skipped"]  # recorded with the real reason


def test_unknown_prebooking_answers_200_so_qstash_stops(client, booking_client):
    raw = json.dumps(
        {"prebookingId": "nope", "userEmail": "a@example.com", "scheduledAt": NOW.isoformat()}
    ).encode()
    resp = deliver(client, raw)
    assert resp.status_code == 200 and resp.json["action"] == "not_found"


def test_same_message_delivered_twice_books_once(app, client, due, booking_client):
    first = deliver(client, body_for(due))
    second = deliver(client, body_for(due))
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json["action"] == "lost_claim"
    drain(app)
    assert len(booking_client.calls) == 1


def test_prebooking_executed_by_cron_first_is_not_booked_again(app, client, due, booking_client):
    from flask_app.core.execution import get_executor

    get_executor(app).attempt(due.id, path="cron")
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        resp = deliver(client, body_for(due))
    assert resp.status_code == 200 and resp.json["action"] == "lost_claim"
    assert [a.detail for a in seen] == [{"executed_by": "cron"}]
    assert len(booking_client.calls) == 1


@pytest.mark.parametrize(
    "outcome",
    [
        BookingOutcome.FULL,
        BookingOutcome.TOO_EARLY,
        BookingOutcome.NO_CREDITS,
        BookingOutcome.SESSION_EXPIRED,
    ],
)
def test_handled_outcomes_end_the_prebooking(app, client, session, due, booking_client, outcome):
    booking_client.default = result(outcome)
    assert deliver(client, body_for(due)).status_code == 200
    drain(app)
    assert reload(session, due).status == "failed"


def test_no_stored_session_fails_the_prebooking_without_a_request(
    app, client, session, booking_client
):
    row = make_prebooking(session, available_at=NOW)
    assert deliver(client, body_for(row)).json["action"] == "armed"
    drain(app)
    assert reload(session, row).status == "failed" and booking_client.calls == []


def test_a_transient_failure_is_retried_by_the_dispatcher_then_released_for_a_later_arrival(
    app, client, session, due, booking_client
):
    booking_client.default = result(BookingOutcome.TRANSIENT, sent=False)
    assert deliver(client, body_for(due)).status_code == 200  # QStash is done with it
    drain(app)
    assert len(booking_client.calls) == 1 + get_dispatcher(app).settings.resend_max
    row = reload(session, due)
    assert (row.status, row.book_sent_at) == ("pending", None)
    booking_client.default = result()
    assert deliver(client, body_for(due), retried=1).status_code == 200
    drain(app)
    assert reload(session, due).status == "completed"


def test_an_arrival_after_an_uncertain_timeout_asks_aimharder_before_booking_again(
    app, client, session, due, booking_client
):
    booking_client.default = result(BookingOutcome.TRANSIENT, uncertain=True)
    deliver(client, body_for(due))
    drain(app)
    assert reload(session, due).status == "pending"
    booking_client.booked_listing = True  # the timed-out request had in fact booked
    deliver(client, body_for(due), retried=1)
    drain(app)
    assert booking_client.listing_calls == 1 and len(booking_client.calls) == 1
    assert reload(session, due).status == "completed"


def test_shadow_mode_records_the_delivery_and_books_nothing(
    app, client, session, due, booking_client
):
    app.config["QSTASH_SHADOW"] = True
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        resp = deliver(client, body_for(due))
    assert resp.status_code == 200 and resp.json["shadow"] is True
    assert [(a.path, a.action.value, a.message_id) for a in seen] == [("shadow", "shadow", "msg_1")]
    assert seen[0].lateness_ms == -3000.0
    assert booking_client.calls == [] and reload(session, due).status == "pending"


def test_disabled_path_answers_200_and_books_nothing(app, client, session, due, booking_client):
    app.config["QSTASH_ENABLED"] = False
    resp = deliver(client, body_for(due))
    assert resp.status_code == 200 and "ignored" in resp.json
    assert booking_client.calls == [] and reload(session, due).status == "pending"


def test_arrivals_report_message_id_and_retry_count(app, client, due):
    seen = []
    with events.attempt_finished.connected_to(lambda s, attempt, **_: seen.append(attempt)):
        deliver(client, body_for(due), message_id="msg_9", retried=2)
        drain(app)
    assert (seen[0].message_id, seen[0].retried) == ("msg_9", 2)


def test_prebookings_opening_together_fire_in_creation_order_with_a_stagger(
    app, client, session, clock, booking_client
):
    app.config["QSTASH_FIRE_STAGGER_MS"] = 2.0
    get_dispatcher(app).settings = DispatchSettings.from_config(app.config)
    rows = []
    for i in range(3):
        email = f"user{i}@example.com"
        store_session(app, session, email)
        created = NOW - timedelta(hours=1) + timedelta(seconds=i)
        rows.append(
            make_prebooking(session, user_email=email, available_at=NOW, created_at=created)
        )
    make_prebooking(session, available_at=NOW + timedelta(seconds=1))  # another instant
    for row in reversed(rows):  # delivered in reverse order: the rank still follows creation
        assert deliver(client, body_for(row)).status_code == 200
    drain(app)
    order = [call["cookies"]["amhrdrauth"] for call in booking_client.calls]
    assert order == [f"token-user{i}@example.com" for i in range(3)]
    assert clock.slept_until[-3:] == [NOW + timedelta(milliseconds=2 * i) for i in range(3)]


def test_a_delivery_the_dispatcher_cannot_hold_answers_503_and_claims_nothing(
    app, client, session, due, booking_client
):
    get_dispatcher(app).settings = DispatchSettings(max_held=0)
    resp = deliver(client, body_for(due))
    assert resp.status_code == 503 and resp.json["action"] == "full"
    assert reload(session, due).status == "pending"
