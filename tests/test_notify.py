"""Outcome events: signatures (valid, tampered, stale), what is sent when, and notify_url rules."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from flask_app import notify
from flask_app.aimharder.client import BookingOutcome
from flask_app.config import ConfigError, settings_from_env
from flask_app.core.execution import get_executor
from flask_app.models import OutboxEntry
from flask_app.qstash import outbox
from tests.factories import make_prebooking, reload, store_session
from tests.fake_gateway import FakeGateway
from tests.fakes import FakeClock, result

SECRET = "whsec-" + "x" * 40
NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
HOOK = "https://ana.example/hooks/prebooking"


# --- signatures (pure) --------------------------------------------------------------------


def test_a_valid_signature_verifies():
    body = b'{"type": "prebooking.booked"}'
    header = notify.sign(SECRET, body, T)
    assert header.startswith(f"t={T},v1=")
    assert notify.verify(SECRET, body, header, now=T + 5)


@pytest.mark.parametrize(
    ("body", "header_of", "secret"),
    [
        (b'{"type": "prebooking.failed"}', lambda h: h, SECRET),  # tampered body
        (b'{"type": "prebooking.booked"}', lambda h: h[:-1] + "0", SECRET),  # tampered mac
        (b'{"type": "prebooking.booked"}', lambda h: h.replace(f"t={T}", f"t={T + 1}"), SECRET),
        (b'{"type": "prebooking.booked"}', lambda h: h, "another-secret"),
        (b'{"type": "prebooking.booked"}', lambda h: "v1=abc", SECRET),
        (b'{"type": "prebooking.booked"}', lambda h: "garbage", SECRET),
    ],
)
def test_tampered_or_foreign_signatures_do_not_verify(body, header_of, secret):
    header = header_of(notify.sign(SECRET, b'{"type": "prebooking.booked"}', T))
    assert not notify.verify(secret, body, header, now=T)


def test_a_stale_signature_does_not_verify():
    body = b"{}"
    header = notify.sign(SECRET, body, T)
    assert notify.verify(SECRET, body, header, now=T + notify.TOLERANCE_S)
    assert not notify.verify(SECRET, body, header, now=T + notify.TOLERANCE_S + 1)
    assert not notify.verify(SECRET, body, header, now=T - notify.TOLERANCE_S - 1)


def test_the_secret_must_be_long_enough():
    assert settings_from_env({"NOTIFY_SIGNING_SECRET": SECRET})["NOTIFY_SIGNING_SECRET"] == SECRET
    with pytest.raises(ConfigError, match="NOTIFY_SIGNING_SECRET"):
        settings_from_env({"NOTIFY_SIGNING_SECRET": "short"})


# --- events from the execution core -------------------------------------------------------


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=1))


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(clock, gateway):
    return {"CLOCK": clock, "QSTASH_GATEWAY": gateway, "NOTIFY_SIGNING_SECRET": SECRET}


def run(app, row):
    """Execute the prebooking, then let the outbox send what it owes (as the runner would)."""
    attempt = get_executor(app).attempt(row.id, path="qstash")
    with app.app_context():
        outbox.drain(get_executor(app).clock.now())
    return attempt


@pytest.mark.parametrize(
    ("outcome", "event", "status"),
    [
        (BookingOutcome.BOOKED, "prebooking.booked", "completed"),
        (BookingOutcome.WAITLISTED, "prebooking.waitlisted", "completed"),
        (BookingOutcome.ALREADY_BOOKED, "prebooking.booked", "completed"),
        (BookingOutcome.FULL, "prebooking.failed", "failed"),
        (BookingOutcome.SESSION_EXPIRED, "prebooking.failed", "failed"),
    ],
)
def test_a_finished_booking_sends_one_signed_event(
    app, session, booking_client, gateway, outcome, event, status
):
    store_session(app, session)
    row = make_prebooking(session, available_at=NOW, notify_url=HOOK)
    booking_client.default = result(outcome, message="La clase está completa")
    run(app, row)
    [msg] = gateway.published
    assert msg.url == HOOK and msg.body["type"] == event
    assert msg.body["data"]["prebooking"]["id"] == row.id
    assert msg.body["data"]["prebooking"]["status"] == status
    assert msg.body["data"]["outcome"] == outcome.value
    assert msg.body["data"]["reason"] == (
        None if status == "completed" else reload(session, row).error_message
    )
    assert msg.deduplication_id == msg.body["id"]
    signature = msg.headers[notify.SIGNATURE_HEADER]
    assert notify.verify(SECRET, notify.encode(msg.body), signature, now=int(NOW.timestamp()))


def test_the_users_default_url_is_used_when_the_prebooking_has_none(
    app, session, gateway, client, auth
):
    put = client.put(
        "/api/sessions/ana@example.com",
        json={"cookies": {"amhrdrauth": "c"}, "notify_url": HOOK},
        headers=auth,
    )
    assert put.status_code == 200 and put.json["notify_url"] == HOOK
    run(app, make_prebooking(session, available_at=NOW))
    assert [m.url for m in gateway.published] == [HOOK]


def test_no_url_no_event(app, session, gateway):
    store_session(app, session)
    run(app, make_prebooking(session, available_at=NOW))
    assert gateway.published == []


def test_a_lost_claim_or_a_retry_sends_nothing(app, session, gateway, booking_client):
    store_session(app, session)
    row = make_prebooking(session, available_at=NOW, notify_url=HOOK)
    booking_client.script = [result(BookingOutcome.TRANSIENT, sent=False)]
    run(app, row)  # released for a retry: nothing final to say
    assert gateway.published == []
    run(app, row)
    run(app, row)  # already completed: the second arrival loses
    assert len(gateway.published) == 1


def test_qstash_down_the_outbox_retries_the_event_and_the_booking_stands(app, session, gateway):
    store_session(app, session)
    row = make_prebooking(session, available_at=NOW, notify_url=HOOK)
    gateway.down = True
    assert run(app, row).status == "completed"
    assert reload(session, row).status == "completed"
    [entry] = session.scalars(select(OutboxEntry)).all()
    assert (entry.action, entry.attempts) == ("notify", 1) and "unreachable" in entry.last_error
    gateway.down = False
    with app.app_context():
        assert outbox.drain(entry.due_at)["notified"] == 1
    assert [m.body["type"] for m in gateway.published] == ["prebooking.booked"]
    assert session.scalars(select(OutboxEntry)).all() == []


def test_the_event_is_built_and_signed_when_it_is_sent(app, session, gateway):
    store_session(app, session)
    row = make_prebooking(session, available_at=NOW, notify_url=HOOK)
    gateway.down = True
    run(app, row)
    gateway.down = False
    later = NOW + timedelta(minutes=3)
    with app.app_context():
        outbox.drain(later)
    [msg] = gateway.published
    signature = msg.headers[notify.SIGNATURE_HEADER]
    assert signature.startswith(f"t={int(later.timestamp())},")  # fresh for the receiver


# --- notify_url at create -----------------------------------------------------------------


def body(**overrides):
    opening = datetime.now(UTC) + timedelta(days=2)
    data = {
        "user_email": "ana@example.com",
        "available_at": opening.isoformat(),
        "booking_data": {"box": "b", "class_id": "1", "day": "20261130"},
    }
    return data | overrides


@pytest.mark.parametrize(
    "url",
    ["http://ana.example/hook", "ftp://ana.example/hook", "https://u:p@ana.example/hook", "hook"],
)
def test_bad_notify_urls_are_422_naming_the_field(client, auth, url):
    resp = client.post("/api/prebookings", json=body(notify_url=url), headers=auth)
    assert resp.status_code == 422 and "notify_url" in resp.json["error"]


def test_loopback_http_only_with_the_local_qstash(app, client, auth):
    local = body(notify_url="http://127.0.0.1:9999/hook")
    made = client.post("/api/prebookings", json=local, headers=auth)
    assert made.status_code == 201 and made.json["notify_url"] == "http://127.0.0.1:9999/hook"
    app.config["QSTASH_URL"] = "https://qstash.upstash.io"
    refused = client.post("/api/prebookings", json=local, headers=auth)
    assert refused.status_code == 422 and refused.json["details"][0]["field"] == "notify_url"
    assert (
        client.post("/api/prebookings", json=body(notify_url=HOOK), headers=auth).status_code == 201
    )


def test_without_a_signing_secret_notify_url_is_503(app, client, auth):
    app.config["NOTIFY_SIGNING_SECRET"] = None
    resp = client.post("/api/prebookings", json=body(notify_url=HOOK), headers=auth)
    assert resp.status_code == 503 and "NOTIFY_SIGNING_SECRET" in resp.json["error"]
    assert client.post("/api/prebookings", json=body(), headers=auth).status_code == 201
