"""The QStash path wired together: the webhook, metrics, the periodic jobs (shim tasks)."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_app.core.dispatch import get_dispatcher
from flask_app.models import Prebooking
from flask_app.periodic import BEAT_SCHEDULE, recover_stale_claims, relay_prebookings
from flask_app.shim.flask import get_celery
from tests.factories import make_prebooking, store_session
from tests.fake_gateway import FakeGateway
from tests.test_callbacks import body_for, deliver


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(gateway):
    return {
        "QSTASH_GATEWAY": gateway,
        "QSTASH_ENABLED": True,
        "APP_BASE_URL": "https://prebook.example.com",
    }


@pytest.fixture
def session(app):
    with app.extensions["db"].session() as s:
        store_session(app, s)
        yield s


def samples(client, name):
    text = client.get("/metrics").get_data(as_text=True)
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_metrics_count_arrivals_webhook_answers_and_publish_errors(
    app, client, session, gateway, auth
):
    due = make_prebooking(session, qstash_message_id="msg_1")
    deliver(client, body_for(due))
    assert get_dispatcher(app).wait_idle(30)  # armed, then fired by the dispatcher
    deliver(client, body_for(due), signed=b"forged")
    gateway.down = True
    opening = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = client.post(
        "/api/prebookings",
        headers=auth,
        json={
            "user_email": "ana@example.com",
            "available_at": opening,
            "booking_data": {"box": "sandbox", "class_id": "9", "day": "20261130"},
        },
    )
    assert made.status_code == 201 and made.json["qstash_message_id"] is None
    arrivals = samples(client, "prebooking_arrivals_total")
    assert arrivals == [({"path": "qstash", "action": "executed"}, 1.0)]
    answers = dict((s["status"], v) for s, v in samples(client, "qstash_webhook_responses_total"))
    assert answers == {"200": 1.0, "401": 1.0}
    assert samples(client, "qstash_publish_errors_total") == [({"kind": "unavailable"}, 1.0)]


def test_beat_schedule_holds_only_the_relay(app):
    """The DLQ and stale claims are the background runner's (no QStash message per minute)."""
    schedule = get_celery(app).conf.beat_schedule
    assert {name: schedule[name]["task"] for name in BEAT_SCHEDULE} == {
        "relay-prebookings": "prebooking.relay",
    }
    assert not {"reconcile-dlq", "recover-stale-claims"} & set(schedule)


def test_relay_task_publishes_through_the_shim(app, session, gateway):
    make_prebooking(session, available_at=datetime.now(UTC) + timedelta(days=3))
    with app.app_context():
        result = relay_prebookings.apply().get()
    assert result["published"] == 1 and len(gateway.published) == 1


def test_stale_claims_are_recovered_without_cron_and_never_double_booked(
    app, session, booking_client
):
    app.config["LEGACY_CRON_ENABLED"] = False  # the QStash-only phase: no tick recovers them
    past = datetime.now(UTC) - timedelta(minutes=5)
    crashed = make_prebooking(
        session,
        status="loaded",
        claimed_by="qstash:dead:1:x",
        claim_expires_at=past,
        book_sent_at=past,
        executed_by="qstash",
    )
    live = make_prebooking(
        session,
        status="loaded",
        claimed_by="qstash:alive:2:y",
        claim_expires_at=datetime.now(UTC) + timedelta(minutes=1),
    )
    booking_client.booked_listing = True  # the dead worker's request had reached AimHarder
    with app.app_context():
        assert recover_stale_claims.apply().get() == {"confirmed": 1}
    session.expire_all()
    assert session.get(Prebooking, crashed.id).status == "completed"
    assert session.get(Prebooking, live.id).status == "loaded"
    assert booking_client.calls == []
